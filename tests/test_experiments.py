"""dcicore.experiments: sweeps (with the atomic on-disk cache), traces, one-task plans, repairs."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from dcicore import experiments
from dcicore.baselines import evaluate
from dcicore.config import SystemConfig
from dcicore.env import DCIEnv
from dcicore.experiments import (
    best_plan,
    decision_space,
    pareto_mask,
    pivot,
    repair_table,
    single_task_plans,
    sweep_baselines,
    trace_episode,
)
from dcicore.profiles import profile_for
from dcicore.scenario import Scenario

SMALL = SystemConfig(num_devices=3, episode_slots=6)


# ------------------------------------------------------------------ sweeps
def test_sweep_rows_match_evaluate_and_store_config():
    rows = sweep_baselines(["LC", "EC"], [2, 3], SMALL, episodes=2, seed=5, arrival_rate_hz=1.0)
    assert [(r["policy"], r["num_devices"]) for r in rows] == [("LC", 2), ("LC", 3), ("EC", 2), ("EC", 3)]
    for r in rows:
        cfg = replace(SMALL, num_devices=r["num_devices"], arrival_rate_hz=1.0)
        assert r["config"] == cfg.to_dict()
        assert r["arrival_rate_hz"] == 1.0 and r["episodes"] == 2 and r["seed"] == 5
        ref = evaluate(r["policy"], cfg, episodes=2, seed=5)
        assert r["system_cost"] == pytest.approx(ref["system_cost"])
        assert r["completion_rate"] == pytest.approx(ref["completion_rate"])
        assert r["completions"] == sum(e["completions"] for e in ref["episodes"])
        assert r["cached"] is False


def test_sweep_rejects_bad_input():
    with pytest.raises(ValueError, match="policy must be one of"):
        sweep_baselines(["Nope"], [2], SMALL)
    with pytest.raises(ValueError, match="episodes"):
        sweep_baselines(["LC"], [2], SMALL, episodes=0)
    with pytest.raises(ValueError, match="config must be a SystemConfig"):
        sweep_baselines(["LC"], [2], config={"num_devices": 2})
    with pytest.raises(TypeError):
        sweep_baselines(["LC"], [2], SMALL, not_a_field=1)


def test_cache_roundtrip(tmp_path):
    path = tmp_path / "sub" / "cache.json"
    first = sweep_baselines(["LC", "Random"], [2, 3], SMALL, episodes=2, seed=1, cache=path)
    assert path.exists()
    stored = json.loads(path.read_text())
    assert len(stored) == 4
    second = sweep_baselines(["LC", "Random"], [2, 3], SMALL, episodes=2, seed=1, cache=path)
    assert all(r["cached"] for r in second)
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if k != "cached"} == {k: v for k, v in b.items() if k != "cached"}
    # another seed or episode count is a different experiment
    third = sweep_baselines(["LC"], [2], SMALL, episodes=3, seed=1, cache=path)
    assert not third[0]["cached"]
    assert len(json.loads(path.read_text())) == 5
    # no temporary files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.json"]


def test_cache_key_covers_the_config(tmp_path):
    path = tmp_path / "c.json"
    sweep_baselines(["LC"], [2], SMALL, episodes=1, cache=path)
    rows = sweep_baselines(["LC"], [2], replace(SMALL, penalty=99.0), episodes=1, cache=path)
    assert not rows[0]["cached"]


def test_callables_are_not_cached(tmp_path):
    from dcicore.baselines import local_computing

    path = tmp_path / "c.json"
    rows = sweep_baselines([local_computing], [2], SMALL, episodes=1, cache=path)
    assert rows[0]["policy"] == "local_computing"
    assert not path.exists()


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    sweep_baselines(["LC"], [2], SMALL, episodes=1, cache=path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(experiments.json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        sweep_baselines(["EC"], [2], SMALL, episodes=1, cache=path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_cache_file_must_hold_an_object(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        sweep_baselines(["LC"], [2], SMALL, episodes=1, cache=path)


def test_pivot():
    rows = [{"num_devices": 5, "policy": "A", "v": 1.0}, {"num_devices": 10, "policy": "A", "v": 2.0},
            {"num_devices": 5, "policy": "B", "v": 3.0}]
    idx, cols, table = pivot(rows, "v")
    assert idx == [5, 10] and cols == ["A", "B"]
    np.testing.assert_array_equal(table[:, 0], [1.0, 2.0])
    assert table[0, 1] == 3.0 and math.isnan(table[1, 1])


# ------------------------------------------------------------------ traces
def test_trace_episode_shapes_and_determinism():
    a = trace_episode("Random", SMALL, seed=3)
    b = trace_episode("Random", SMALL, seed=3)
    T, n1 = SMALL.episode_slots, SMALL.num_nodes
    assert a["free_before"].shape == (T, n1) and a["free_after"].shape == (T, n1)
    assert a["positions_m"].shape == (n1, 2) and a["link"].shape == (n1, n1)
    for k in ("free_before", "free_after", "cost", "failures", "completions"):
        np.testing.assert_array_equal(a[k], b[k])
    # the decisions of a slot can only take share away
    assert np.all(a["free_after"] <= a["free_before"] + 1e-12)
    assert a["constraints_ok"].all()
    # the per-slot rewards add up to minus the episode's system cost
    from dcicore.baselines import make_policy, run_episode

    tot = run_episode(make_policy("Random", 3), SMALL, 3)
    # reset-time drops are charged by run_episode only
    assert -a["reward"].sum() == pytest.approx(tot["system_cost"] - SMALL.penalty * (tot["failures"] - a["failures"].sum()))


# ------------------------------------------------------------------ problem size
def test_decision_space_counts():
    c = SystemConfig(num_devices=4, num_subcarriers=3, episode_slots=2)
    d = decision_space(c)
    assert d["per_task"] == 5 * 8 * 100 * 3
    assert d["log10_per_slot"] == pytest.approx(c.max_tasks * math.log10(12000))
    assert d["log10_per_episode"] == pytest.approx(2 * d["log10_per_slot"])
    assert d["integer_variables_per_slot"] == 4 * c.max_tasks


# ------------------------------------------------------------------ one task
def _toy_scenario(c: SystemConfig) -> Scenario:
    """MEC at 0, ED 1 (0.5 GHz) 100 m away, ED 2 (1 GHz) 100 m from ED 1 and out of MEC reach."""
    pos = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    cap = np.array([10e9, 0.5e9, 1e9])
    dist = np.abs(pos[:, None, 0] - pos[None, :, 0])
    link = np.array([[True, True, False], [True, True, True], [False, True, True]])
    from dcicore.costs import channel_gain, transmission_rate

    rate = transmission_rate(c.bandwidth_hz, c.num_subcarriers, channel_gain(dist, 4.0, 1.0),
                             c.tx_power_w, c.noise_w)
    rate = np.where(link, rate, 0.0)
    np.fill_diagonal(rate, 0.0)
    return Scenario(pos, cap, dist, link, rate)


def test_single_task_plans_hand_values():
    c = SystemConfig(num_devices=2)
    sc = _toy_scenario(c)
    prof = profile_for(c)
    shares = np.array([0.5, 1.0])
    p = single_task_plans(c, sc, 1, shares=shares)
    # all local: 2 plans; splits 0..7 to the MEC and to ED 2: split 0 has 2 plans, others 4
    assert p["split"].size == 2 + 2 * (2 + 7 * 4)
    loc = (p["split"] == 8) & (p["share_local"] == 0.5)
    r = 0.25e9
    assert p["delay_s"][loc][0] == pytest.approx(prof.total_cycles / r)
    assert p["energy_j"][loc][0] == pytest.approx(c.k0 * prof.total_cycles * r**2)
    # split 0 to the MEC at 100 %: send the raw input, then everything on 10 GHz
    sel = (p["split"] == 0) & (p["node"] == 0) & (p["share_remote"] == 1.0)
    rate = sc.rate_bps[1, 0]
    assert p["delay_s"][sel][0] == pytest.approx(prof.input_bits / rate + prof.total_cycles / 10e9)
    assert p["energy_j"][sel][0] == pytest.approx(
        c.tx_power_w * prof.input_bits / rate + c.mec_k0 * prof.total_cycles * (10e9) ** 2)
    # split 3 to ED 2 at (0.5, 0.5): conv1..conv3 local, output of conv3 sent
    sel = (p["split"] == 3) & (p["node"] == 2) & (p["share_local"] == 0.5) & (p["share_remote"] == 0.5)
    c_loc = prof.workload_cycles[:3].sum()
    c_rem = prof.total_cycles - c_loc
    t_tx = prof.output_bits[2] / sc.rate_bps[1, 2]
    assert p["delay_s"][sel][0] == pytest.approx(c_loc / 0.25e9 + t_tx + c_rem / 0.5e9)
    assert p["feasible"].dtype == bool
    np.testing.assert_array_equal(p["feasible"], p["delay_s"] <= c.deadline_s + 1e-9)


def test_single_task_plans_respects_links():
    c = SystemConfig(num_devices=2)
    sc = _toy_scenario(c)
    p = single_task_plans(c, sc, 2, shares=[1.0])
    assert set(np.unique(p["node"])) == {1, 2}  # ED 2 cannot reach the MEC
    with pytest.raises(ValueError, match="source must be an ED"):
        single_task_plans(c, sc, 0)
    with pytest.raises(ValueError, match="shares"):
        single_task_plans(c, sc, 1, shares=[0.0, 0.5])


def test_pareto_mask_by_hand():
    d = np.array([1.0, 2.0, 3.0, 2.0, 1.0, 4.0])
    e = np.array([5.0, 3.0, 1.0, 4.0, 5.0, 1.0])
    m = pareto_mask(d, e)
    # (1,5) once, (2,3), (3,1); (2,4) dominated by (2,3); (4,1) dominated by (3,1)
    assert m.sum() == 3
    assert m[1] and m[2] and (m[0] ^ m[4]) and not m[3] and not m[5]


def test_best_plan_picks_least_feasible_cost():
    plans = {"split": np.array([8, 0, 1]), "node": np.array([1, 0, 0]),
             "share_local": np.array([1.0, 0.0, 0.5]), "share_remote": np.array([0.0, 1.0, 0.5]),
             "delay_s": np.array([4.0, 1.0, 2.0]), "energy_j": np.array([0.1, 2.0, 1.0]),
             "feasible": np.array([False, True, True])}
    b = best_plan(plans, 0.5, 0.5)  # costs: inf (infeasible), 1.5, 1.5 -> first
    assert b["index"] == 1 and b["cost"] == pytest.approx(1.5)
    b = best_plan(plans, 0.9, 0.1)  # 1.9, 1.1
    assert b["index"] == 2 and b["split"] == 1
    plans["feasible"][:] = False
    with pytest.raises(ValueError, match="no plan meets the deadline"):
        best_plan(plans, 0.5, 0.5)


def test_weight_shifts_the_optimal_rate():
    """Eq 6 per cycle, ω_e k0 r² + ω_d / r, is least at r* = (ω_d / (2 ω_e k0))^(1/3): with a
    loose deadline a 1 GHz source keeps every layer and runs at the share closest to r*."""
    c = SystemConfig(num_devices=2, deadline_s=100.0)
    sc = _toy_scenario(c)
    p = single_task_plans(c, sc, 2)  # ED 2: 1 GHz, 10 MHz steps; helper ED 1 at 0.5 GHz
    rates = []
    for we in (0.05, 0.2, 0.5):
        b = best_plan(p, we, 1 - we)
        r_star = ((1 - we) / (2 * we * c.k0)) ** (1 / 3)
        assert b["split"] == 8 and b["node"] == 2
        assert abs(b["share_local"] * 1e9 - r_star) <= 0.01e9
        rates.append(b["share_local"])
    assert rates[0] > rates[1] > rates[2]


# ------------------------------------------------------------------ repairs
def test_repair_table_shows_the_repairs():
    c = SystemConfig(num_devices=2, max_tasks_per_device=2, background_load_max=0.0,
                     mec_background_load_max=0.0, num_subcarriers=2, mec_range_m=1e4, d2d_range_m=1e4)
    env = DCIEnv(c)
    env.reset(seed=0, options={"initial_tasks": np.array([2, 1])})
    a = np.zeros((4, 4), dtype=np.int64)
    a[0] = [0, 7, 69, 1]  # MEC, 70 %, subcarrier 1
    a[1] = [0, 7, 69, 1]  # the same subcarrier, and 70 % more of the MEC
    a[2] = [2, 7, 0, 0]  # stays on ED 2 (its own node), the whole model at 1 % share
    rows = repair_table(env, a)
    by = {r["row"]: r for r in rows}
    assert set(by) == {0, 1, 2}
    assert by[0]["granted_carrier"] == 1 and by[1]["granted_carrier"] == 0  # constraint 7
    assert by[0]["granted_level"] == 70 and by[1]["granted_level"] == 30  # constraint 8
    assert by[2]["granted_block_end"] == 7 and by[2]["granted_carrier"] == -1
    # a stage at 1 % of an ED cannot end in time: the task fails (constraint 10)
    assert by[2]["outcome"] == "failed"
    # the table does not step the environment
    assert env.t == 0


def test_scenario_from_positions_matches_make_scenario():
    from dcicore.experiments import scenario_from_positions
    from dcicore.scenario import make_scenario

    c = SystemConfig(num_devices=5)
    ref = make_scenario(c, np.random.default_rng(7))
    sc = scenario_from_positions(c, ref.positions_m, ref.capacity_hz)
    np.testing.assert_array_equal(sc.link, ref.link)
    np.testing.assert_allclose(sc.rate_bps, ref.rate_bps)
    np.testing.assert_allclose(sc.distance_m, ref.distance_m)
    with pytest.raises(ValueError, match="positions_m must be"):
        scenario_from_positions(c, ref.positions_m[:3], ref.capacity_hz)
