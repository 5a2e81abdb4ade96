"""Baselines (LC, EC, Random, Greedy), ``evaluate``, and property tests of the scheduler."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcicore.baselines import RandomOffloading, edge_computing, evaluate, greedy, local_computing
from dcicore.config import SystemConfig
from dcicore.env import DCIEnv
from dcicore.schedule import SlotInputs, start_stages, start_stages_reference

CFG = SystemConfig(num_devices=6, episode_slots=20)


def play(policy, config=CFG, seed=0):
    """One episode; yields (env before the step, ready rows, action, outcome, info) per slot."""
    env = DCIEnv(config)
    env.reset(seed=seed)
    trunc = False
    while not trunc:
        ready = env.ready_mask().copy()
        loc = env.location.copy()
        free = env.free_levels().copy()
        carriers_free = (env.carrier_busy == 0).copy()
        a = policy(env)
        _, _, _, trunc, info = env.step(a)
        yield dict(env=env, ready=ready, loc=loc, free=free, carriers_free=carriers_free, a=a,
                   out=env.last_outcome, info=info)


def test_lc_never_moves_data():
    stages = 0
    for s in play(local_computing):
        out = s["out"]
        assert s["info"]["collaborations"] == 0
        assert np.all(out.node[out.started] == s["loc"][out.started])
        stages += int(out.started.sum())
    assert stages > 0
    assert evaluate("LC", CFG, episodes=2, seed=0)["collaborations"] == 0


def test_ec_sends_every_reachable_task_to_the_mec():
    sent = 0
    for s in play(edge_computing):
        env, out, ready = s["env"], s["out"], s["ready"]
        assert np.all(s["a"][ready, 0] == 0)  # EC always asks for the MEC
        reach = env.physics.link[np.maximum(s["loc"], 0), 0] & ready
        # a reachable task that started elsewhere must have lost the race for a subcarrier
        elsewhere = out.started & reach & (out.node != 0)
        if elsewhere.any():
            assert out.moving.sum() == s["carriers_free"].sum()
        # a task that cannot reach the MEC is repaired to run where its data is
        assert np.all(out.node[out.started & ~reach] == s["loc"][out.started & ~reach])
        sent += int((out.started & (out.node == 0)).sum())
    assert sent > 0


def test_random_uses_both_choices():
    pol = RandomOffloading(seed=0)
    to_mec = local = 0
    for s in play(pol):
        out = s["out"]
        to_mec += int((out.started & (out.node == 0)).sum())
        local += int((out.started & (out.node == s["loc"])).sum())
    assert to_mec > 0 and local > 0


def test_greedy_actions_need_no_repair():
    checked = 0
    for s in play(greedy):
        a, out, ready = s["a"], s["out"], s["ready"]
        st_ = out.started
        # what Greedy planned is what the env did: node, block end, level, subcarrier
        assert np.all(out.node[st_] == a[st_, 0])
        assert np.all(out.end_layer[st_] == a[st_, 1])
        assert np.all(out.level[st_] == a[st_, 2] + 1)  # granted == requested
        assert np.all(out.carrier[out.moving] == a[out.moving, 3])
        # a ready row that did not start is Greedy's fallback (nothing meets the deadline):
        # it asked for its own node; it failed, or waited because that node was full
        idle = ready & ~st_
        assert np.all(a[idle, 0] == s["loc"][idle])
        for r in np.flatnonzero(out.waiting):  # waited: the earlier rows' requests filled the node
            n = a[r, 0]
            earlier = ready & (np.arange(ready.size) < r) & (a[:, 0] == n)
            assert s["free"][n] - (a[earlier, 2] + 1).sum() <= 0
        checked += int(st_.sum())
    assert checked > 0


def test_greedy_same_under_both_conflict_rules():
    """Greedy's actions need no repair, so penalising repairs changes nothing."""
    a = evaluate("Greedy", CFG, episodes=2, seed=1)
    b = evaluate("Greedy", replace(CFG, conflict_rule="fail"), episodes=2, seed=1)
    assert a["system_cost"] == pytest.approx(b["system_cost"], rel=1e-12)
    assert a["completion_rate"] == b["completion_rate"]


@pytest.mark.parametrize("policy", ["LC", "EC", "Random", "Greedy"])
def test_evaluate_keys_ranges_and_determinism(policy):
    r = evaluate(policy, CFG, episodes=2, seed=3)
    for key in ("system_cost", "completion_rate", "collaborations", "energy_j", "delay_s",
                "cost_per_task", "system_cost_std", "episodes"):
        assert key in r
    assert 0.0 <= r["completion_rate"] <= 1.0
    for key in ("system_cost", "collaborations", "energy_j", "delay_s", "cost_per_task", "system_cost_std"):
        assert np.isfinite(r[key]) and r[key] >= 0.0
    assert len(r["episodes"]) == 2
    again = evaluate(policy, CFG, episodes=2, seed=3)
    assert again["system_cost"] == r["system_cost"]
    assert again["completion_rate"] == r["completion_rate"]
    assert again["episodes"] == r["episodes"]


def test_greedy_beats_lc_on_the_default_system():
    lc = evaluate("LC", CFG, episodes=2, seed=0)
    gr = evaluate("Greedy", CFG, episodes=2, seed=0)
    assert gr["system_cost"] < lc["system_cost"]
    assert gr["completion_rate"] > lc["completion_rate"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="policy"):
        evaluate("Optimal", CFG, episodes=1)
    with pytest.raises(ValueError, match="episodes"):
        evaluate("LC", CFG, episodes=0)
    with pytest.raises(ValueError, match="episodes"):
        evaluate("LC", CFG, episodes=1.5)
    with pytest.raises(ValueError, match="policy"):
        evaluate(42, CFG, episodes=1)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), s=st.integers(1, 3),
       lam=st.floats(0.2, 3.0), rule=st.sampled_from(["repair", "fail"]))
def test_random_actions_keep_constraints_7_to_10(seed, n, s, lam, rule):
    cfg = SystemConfig(num_devices=n, num_subcarriers=s, arrival_rate_hz=lam, episode_slots=12,
                       conflict_rule=rule)
    env = DCIEnv(cfg)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    spent = np.zeros(cfg.max_tasks)  # Σ stage delays of each row's current task (constraint 10)
    trunc = False
    while not trunc:
        _, reward, _, trunc, info = env.step(env.action_space.sample())
        out = env.last_outcome
        assert info["constraints_ok"]  # 7 and 8
        assert info["cost"] >= 0 and info["energy_j"] >= 0 and info["delay_s"] >= 0 and reward <= 0
        st_ = out.started
        spent[st_ & (out.first_layer == 0)] = 0.0  # a new task's first stage
        spent[st_] += out.trans_s[st_] + out.comp_s[st_]
        done = st_ & (out.end_layer == cfg.num_layers - 1)
        # 10 for every completed task, and its last stage ends before the deadline
        assert np.all(spent[done] <= cfg.deadline_s + 1e-9)
        assert np.all(env.last_elapsed_s[done] + out.trans_s[done] + out.comp_s[done] <= cfg.deadline_s + 1e-9)
        # 9: blocks start at the next layer and stay inside the model
        assert np.all(out.first_layer[st_] <= out.end_layer[st_])
        assert np.all(out.end_layer[st_] < cfg.num_layers)


@st.composite
def slot_inputs(draw):
    """A random slot, often crowded: many ready rows, few subcarriers, little free capacity."""
    n = draw(st.integers(1, 5))
    k = draw(st.integers(1, 6))
    s = draw(st.integers(1, 4))
    cfg = SystemConfig(num_devices=n, max_tasks_per_device=k, num_subcarriers=s,
                       return_result=draw(st.booleans()))
    env = DCIEnv(cfg)
    env.reset(seed=draw(st.integers(0, 1000)))
    ph = replace(env.physics, fail_on_conflict=draw(st.booleans()))
    m, n1, L = cfg.max_tasks, cfg.num_nodes, cfg.num_layers
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    crowded = draw(st.booleans())
    ready = rng.random(m) < (0.95 if crowded else 0.5)
    free_hi = 30 if crowded else cfg.share_levels
    x = SlotInputs(
        ready=ready,
        next_layer=rng.integers(0, L, m),
        location=rng.integers(0, n1, m),
        source=env.row_source.copy(),
        elapsed_s=rng.uniform(0.0, cfg.deadline_s, m),
        free_levels=rng.integers(0, free_hi + 1, n1),
        carrier_free=rng.random(s) < (0.5 if crowded else 0.9),
        action=np.stack([rng.integers(0, n1, m), rng.integers(0, L, m),
                         rng.integers(0, cfg.share_levels, m), rng.integers(0, s, m)], axis=1),
    )
    return ph, x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=slot_inputs())
def test_vectorized_scheduler_equals_reference(case):
    ph, x = case
    fast = start_stages(ph, x)
    ref = start_stages_reference(ph, x)
    for name in fast.__dataclass_fields__:
        f, r = getattr(fast, name), getattr(ref, name)
        if f.dtype.kind == "f":
            np.testing.assert_allclose(f, r, rtol=1e-12, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(f, r, err_msg=name)
    # and the slot's grants respect the free levels (8) and distinct subcarriers (7)
    granted = np.bincount(fast.node[fast.started], weights=fast.level[fast.started], minlength=x.free_levels.size)
    assert np.all(granted <= x.free_levels)
    used = fast.carrier[fast.moving]
    assert used.size == np.unique(used).size and np.all(x.carrier_free[used])
