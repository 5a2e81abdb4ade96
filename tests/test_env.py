"""The DCI-v0 environment: Gymnasium compliance, determinism, a hand-worked step, constraints."""

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dcicore  # noqa: F401  (registers the environment)
from dcicore.config import SystemConfig
from dcicore.env import DCIEnv
from dcicore.profiles import paper_model
from dcicore.scenario import scenario_from

QUIET = dict(arrival_rate_hz=0.0, background_load_max=0.0, mec_background_load_max=0.0)


def toy(**kw):
    """N = 1: the MEC at the centre, one 0.5 GHz ED 100 m away, one task, no load."""
    cfg = SystemConfig(num_devices=1, **{**QUIET, **kw})
    scen = scenario_from(cfg, [[250.0, 250.0], [350.0, 250.0]], [10e9, 0.5e9])
    env = DCIEnv(cfg)
    env.reset(seed=0, options={"scenario": scen, "initial_tasks": [1]})
    return cfg, env


def test_registered_and_check_env():
    env = gym.make("dcicore/DCI-v0", config=SystemConfig(num_devices=4))
    check_env(env.unwrapped)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)


def test_local_step_hand_worked():
    cfg, env = toy()
    a = np.zeros((cfg.max_tasks, 4), dtype=np.int64)
    a[0] = [1, 7, 49, 0]  # whole model on the ED itself at 50 % of 0.5 GHz = 0.25 GHz
    _, reward, _, _, info = env.step(a)
    C = paper_model().workload_cycles.sum()  # 743,844,550 cycles
    delay = C / 0.25e9  # Eq 1: 2.9754 s <= T = 3 s
    energy = 1e-26 * C * 0.25e9**2  # Eq 4: 0.4649 J
    assert delay == pytest.approx(2.9753782)
    assert energy == pytest.approx(0.46490284375)
    assert info["delay_s"] == pytest.approx(delay)
    assert info["energy_j"] == pytest.approx(energy)
    assert reward == pytest.approx(-(0.8 * energy + 0.2 * delay))
    assert info["completions"] == 1 and info["failures"] == 0 and info["collaborations"] == 0
    # the stage holds its share for ceil(2.975 / 0.5) = 6 slots
    assert env.busy[0] == 6 - 1 and env.stage_level_sum()[1] == 50


def test_offload_step_hand_worked():
    cfg, env = toy()
    a = np.zeros((cfg.max_tasks, 4), dtype=np.int64)
    a[0] = [0, 7, 2, 4]  # whole model on the MEC at 3 % of 10 GHz = 0.3 GHz, subcarrier 4
    _, reward, _, _, info = env.step(a)
    C = paper_model().workload_cycles.sum()
    rate = 20e6 / 10 * math.log2(1 + 100.0**-4 * 1.0 / (10 ** (-11.3) / 1000))  # Eq 2
    trans = 786432 / rate  # Eq 3: the raw input
    comp = C / 0.3e9
    energy = 1e-26 * C * 0.3e9**2 + 1.0 * trans  # Eqs 4 + 5
    assert info["delay_s"] == pytest.approx(trans + comp)
    assert info["energy_j"] == pytest.approx(energy)
    assert reward == pytest.approx(-(0.8 * energy + 0.2 * (trans + comp)))
    assert info["collaborations"] == 1
    assert env.carrier_busy[4] == 0  # held for one slot (transmission < 0.5 s), now released


def test_infeasible_stage_fails_with_penalty():
    cfg, env = toy(penalty=7.0)
    a = np.zeros((cfg.max_tasks, 4), dtype=np.int64)
    a[0] = [1, 7, 9, 0]  # 10 % of 0.5 GHz: 14.9 s > T
    _, reward, _, _, info = env.step(a)
    assert info["failures"] == 1 and info["completions"] == 0
    assert reward == pytest.approx(-7.0)
    assert not env.active.any()


def test_block_and_node_repair():
    cfg, env = toy()
    a = np.zeros((cfg.max_tasks, 4), dtype=np.int64)
    a[0] = [1, 2, 99, 0]  # conv1..conv3 locally at 100 %
    env.step(a)
    assert env.next_layer[0] == 3
    # later the block end 0 (< next layer) is clipped up to the next layer
    while not env.ready_mask()[0]:
        env.step(np.zeros_like(a))
    a[0] = [1, 0, 99, 0]
    env.step(a)
    assert env.next_layer[0] == 4


def test_seeded_determinism():
    def run(seed):
        env = DCIEnv(SystemConfig(num_devices=6))
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs["task_features"].sum()]
        for _ in range(30):
            obs, r, _, _, info = env.step(env.action_space.sample())
            out += [r, obs["node_features"].sum(), info["completions"]]
        return np.array(out)

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


@pytest.mark.parametrize("rule,share", [("repair", "absolute"), ("fail", "absolute"),
                                        ("repair", "relative")])
def test_vectorized_equals_reference_env(rule, share):
    cfg = SystemConfig(num_devices=8, num_subcarriers=3, arrival_rate_hz=1.5, conflict_rule=rule,
                       share_action=share)
    fast, ref = DCIEnv(cfg), DCIEnv(cfg, reference=True)
    o1, _ = fast.reset(seed=11)
    o2, _ = ref.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(40):
        # mostly sensible actions (high shares) so that many stages start and compete
        a = np.stack([rng.integers(0, cfg.num_nodes, cfg.max_tasks), rng.integers(0, 8, cfg.max_tasks),
                      rng.integers(20, 100, cfg.max_tasks), rng.integers(0, 3, cfg.max_tasks)], 1)
        o1, r1, _, _, i1 = fast.step(a)
        o2, r2, _, _, i2 = ref.step(a)
        assert r1 == pytest.approx(r2, rel=1e-12, abs=1e-12)
        for k in ("completions", "failures", "collaborations", "stages"):
            assert i1[k] == i2[k]
        for k in o1:
            np.testing.assert_array_equal(o1[k], o2[k])


def test_info_fields_and_truncation():
    cfg = SystemConfig(num_devices=3, episode_slots=5)
    env = DCIEnv(cfg)
    env.reset(seed=0)
    for t in range(5):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        assert not term
    assert trunc
    for k in ("energy_j", "delay_s", "cost", "completions", "failures", "collaborations",
              "free_share_before", "free_share_after", "constraints_ok"):
        assert k in info
    assert info["free_share_before"].shape == (cfg.num_nodes,)
    assert np.all(info["free_share_after"] <= info["free_share_before"] + 1e-12)


def test_bad_reset_options():
    env = DCIEnv(SystemConfig(num_devices=2))
    with pytest.raises(ValueError, match="initial_tasks"):
        env.reset(seed=0, options={"initial_tasks": [1]})
    with pytest.raises(ValueError, match="reset options"):
        env.reset(seed=0, options={"bogus": 1})
    with pytest.raises(ValueError, match="config must be a SystemConfig"):
        DCIEnv({"num_devices": 3})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), s=st.integers(1, 4),
       lam=st.floats(0.1, 3.0))
def test_random_actions_keep_constraints(seed, n, s, lam):
    cfg = SystemConfig(num_devices=n, num_subcarriers=s, arrival_rate_hz=lam, episode_slots=12)
    env = DCIEnv(cfg)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    trunc = False
    while not trunc:
        ready = env.ready_mask().copy()
        _, r, _, trunc, info = env.step(env.action_space.sample())
        assert info["constraints_ok"]  # 7 and 8
        assert info["cost"] >= 0 and info["energy_j"] >= 0 and info["delay_s"] >= 0
        assert r <= 0
        out = env.last_outcome
        # 9: each started block begins at the task's next layer and ends within the model
        assert np.all(out.first_layer[out.started] <= out.end_layer[out.started])
        assert np.all(out.end_layer[out.started] < cfg.num_layers)
        assert np.all(env.next_layer <= cfg.num_layers)
        # 10: every started stage ends before its task's deadline
        end = env.last_elapsed_s + out.trans_s + out.comp_s
        assert np.all(end[out.started] <= cfg.deadline_s + 1e-9)
        # rows that were not ready did nothing
        assert not np.any(out.started[~ready] | out.failed[~ready])
        assert np.all(env.free_levels() >= 0)


def test_fail_rule_penalises_repairs():
    a = np.zeros((1 * 3, 4), dtype=np.int64)
    a[0] = [1, 7, 59, 0]  # asks for 60 % of the ED while only 55 % is free
    results = {}
    for rule in ("repair", "fail"):
        cfg, env = toy(conflict_rule=rule)
        env.background[1] = 0.45
        _, r, _, _, info = env.step(a)
        results[rule] = (info["completions"], info["failures"], r)
    # repair grants 55 % = 0.275 GHz: 743.8e6 / 0.275e9 = 2.70 s <= T, the task completes
    assert results["repair"][:2] == (1, 0)
    # fail: the same action is a failure with the penalty
    assert results["fail"][:2] == (0, 1) and results["fail"][2] == pytest.approx(-10.0)


def test_relative_share_hand_worked():
    cfg, env = toy(share_action="relative")
    C = paper_model().workload_cycles.sum()
    # index 0: just fast enough. Whole model locally within T = 3 s on 0.5 GHz:
    # need = ceil(100 * C / (0.5e9 * 3)) = ceil(49.59) = 50 levels
    a = np.zeros((cfg.max_tasks, 4), dtype=np.int64)
    a[0] = [1, 7, 0, 0]
    env.step(a)
    assert env.stage_level_sum()[1] == 50
    # the last index doubles it (capped at 100 levels)
    cfg, env = toy(share_action="relative")
    a[0] = [1, 7, cfg.share_levels - 1, 0]
    env.step(a)
    assert env.stage_level_sum()[1] == 100
    # a first block gets a time budget proportional to its cycles: conv1..conv3 on the ED
    cfg, env = toy(share_action="relative")
    a[0] = [1, 2, 0, 0]
    env.step(a)
    c3 = paper_model().workload_cycles[:3].sum()
    budget = 3.0 * c3 / C
    assert env.stage_level_sum()[1] == math.ceil(100 * c3 / (0.5e9 * budget) - 1e-9)
    assert env.action_masks()["max_level"].tolist() == [100, 100]
