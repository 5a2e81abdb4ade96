"""The exact optimum of small instances (dcicore.exact): a toy worked by hand, the MILP against
brute force, replays, and Exact <= Greedy <= LC on identical deterministic instances."""

import numpy as np
import pytest

from dcicore.exact import (
    exhaustive_single_task,
    run_policy,
    small_config,
    solve_exact,
    solve_time_table,
    spread_tasks,
)
from dcicore.profiles import paper_model
from dcicore.scenario import Scenario

RATE = 2.0**22  # bit/s, the hand-built link of the toy (4,194,304 bit/s)


def toy_instance():
    """N = 1: the MEC (node 0, 10 GHz) and one ED (node 1, 1 GHz), linked at RATE bit/s.

    k0 = 1e-27 on the ED and 1.25e-28 on the MEC make the cost-optimal rates round numbers.
    """
    cfg = small_config(1, k0=1e-27, mec_k0=1.25e-28)
    pos = np.array([[250.0, 250.0], [350.0, 250.0]])
    dist = np.array([[0.0, 100.0], [100.0, 0.0]])
    rate = np.array([[0.0, RATE], [RATE, 0.0]])
    link = np.ones((2, 2), dtype=bool)
    scen = Scenario(positions_m=pos, capacity_hz=np.array([10e9, 1e9]), distance_m=dist, link=link,
                    rate_bps=rate)
    return cfg, scen


def test_toy_worked_by_hand():
    cfg, scen = toy_instance()
    prof = paper_model()
    C = prof.workload_cycles  # (8,) cycles, sum 743,844,550
    cum = np.concatenate([[0.0], np.cumsum(C)])
    in_bits = np.concatenate([[prof.input_bits], prof.output_bits[:-1]])  # bits sent before layer k
    w_e, w_d, p = 0.8, 0.2, 1.0

    # A stage of C_b cycles at rate r costs C_b · f(r), f(r) = w_e·k0·r² + w_d / r (Eqs 1, 4, 6),
    # plus (w_e·p + w_d) = 1.0 per second of transmission (Eqs 3, 5). f is minimal at
    # r* = (w_d / (2·w_e·k0))^(1/3):
    #   ED : k0 = 1e-27    -> r* = (0.125 / 1e-27)^(1/3)    = 5e8 Hz = 50 levels of 1 GHz,
    #        f(r*) = 0.8·1e-27·2.5e17 + 0.2 / 5e8 = 2e-10 + 4e-10 = 6e-10 per cycle;
    #   MEC: k0 = 1.25e-28 -> r* = (0.125 / 1.25e-28)^(1/3) = 1e9 Hz = 10 levels of 10 GHz,
    #        f(r*) = 0.8·1.25e-28·1e18 + 0.2 / 1e9 = 1e-10 + 2e-10 = 3e-10 per cycle.
    f_ed, f_mec = 6e-10, 3e-10
    assert w_e * 1e-27 * 5e8**2 + w_d / 5e8 == pytest.approx(f_ed, rel=1e-12)
    assert w_e * 1.25e-28 * 1e9**2 + w_d / 1e9 == pytest.approx(f_mec, rel=1e-12)
    # Lower bound for ANY plan: let k be the first layer it runs on the MEC. Layers < k run on
    # the ED (≥ 6e-10 per cycle), the others cost ≥ 3e-10 per cycle, and the data crosses the
    # link at least once, before layer k (in_bits[k] / RATE seconds). So
    #   cost ≥ cost(k) = 6e-10·cum[k] + 3e-10·(C − cum[k]) + in_bits[k] / RATE,
    # and a plan that never uses the MEC costs ≥ cost(8) = 6e-10·C. Running layers < k on the ED
    # at 50 levels and the rest on the MEC at 10 levels reaches cost(k) exactly, if it meets T.
    #   k = 0: 3e-10·743,844,550 + 786,432 / 2^22         = 0.2231534 + 0.1875    = 0.4106534
    #   k = 1: 6e-10·8,355,840 + 3e-10·735,488,710 + 2^18/2^22
    #        = 0.0050135 + 0.2206466 + 0.0625                                     = 0.2881601
    #   k = 2: 0.0317522 + 0.2072773 + 0.25                                       = 0.4890295
    #   k = 3: 0.1387069 + 0.1537999 + 0.0625                                     = 0.3550068
    #   k = 4..7: 0.491256, 0.457750, 0.449374, 0.447280;  k = 8 (all on the ED)  = 0.4463067
    cost = [f_ed * cum[k] + f_mec * (cum[8] - cum[k]) + in_bits[k] / RATE for k in range(8)]
    cost.append(f_ed * cum[8])
    assert int(np.argmin(cost)) == 1
    assert cost[1] == pytest.approx(0.288160117, abs=1e-9)
    # k = 1 meets the deadline: conv1 on the ED takes 8,355,840 / 5e8 = 0.0167 s (slot 0); at
    # slot 1 (0.5 s elapsed) the MEC needs 0.0625 + 735,488,710 / 1e9 = 0.798 s: ends at 1.30 s ≤ 3 s.
    hand = cost[1]

    res = solve_exact(cfg, seed=0, initial_tasks=[1], scenario=scen)
    assert res.status == "optimal"
    assert res.cost == pytest.approx(hand, abs=1e-9)
    # the plan: conv1 on the ED at 50 levels, then the rest on the MEC at 10 levels (cutting the
    # MEC's part into several stages at the same rate costs the same, so ties may split it)
    (events,) = res.plan.values()
    slots = sorted(events)
    assert events[slots[0]] == ("stage", 1, 0, 50)
    assert all(events[t][:2] == ("stage", 0) and events[t][3] == 10 for t in slots[1:])
    assert events[slots[-1]][2] == 7
    assert exhaustive_single_task(cfg, seed=0, initial_tasks=[1], scenario=scen) == pytest.approx(hand, abs=1e-9)
    played = run_policy(res.actions, cfg, seed=0, initial_tasks=[1], scenario=scen)
    assert played["system_cost"] == pytest.approx(hand, abs=1e-9)
    assert played["completions"] == 1 and played["collaborations"] == 1


# single-task instances that exercise offloading, splitting, failing, the return leg and the
# "fail" conflict rule
SINGLE = [
    (1, 0, {}),
    (2, 1, dict(ed_capacity_max_hz=0.3e9)),
    (3, 2, dict(ed_capacity_max_hz=0.3e9)),
    (2, 3, dict(w_energy=0.2, w_delay=0.8)),
    (1, 4, dict(return_result=True, slot_s=0.4)),
    (3, 5, dict(deadline_s=1.2)),
    (1, 6, dict(mec_k0=1e-28, slot_s=0.3)),
    (2, 7, dict(conflict_rule="fail", ed_capacity_max_hz=0.25e9)),
]


@pytest.mark.parametrize("num_devices,seed,changes", SINGLE)
def test_milp_equals_exhaustive_single_task(num_devices, seed, changes):
    cfg = small_config(num_devices, **changes)
    counts = np.zeros(num_devices, dtype=np.int64)
    counts[seed % num_devices] = 1
    brute = exhaustive_single_task(cfg, seed=seed, initial_tasks=counts)
    res = solve_exact(cfg, seed=seed, initial_tasks=counts)
    assert res.status == "optimal"
    assert res.cost == pytest.approx(brute, rel=1e-9, abs=1e-9)
    assert run_policy(res.actions, cfg, seed, counts)["system_cost"] == pytest.approx(brute, rel=1e-9, abs=1e-9)


# small random instances (N = 2..3, 1-3 tasks); the last two contend for capacity or subcarriers
MULTI = [
    (2, 1, 0, {}),
    (2, 2, 1, {}),
    (2, 3, 1, {}),
    (3, 3, 1, {}),
    (3, 3, 2, {}),
    (2, 3, 0, dict(ed_capacity_max_hz=0.4e9)),
    (3, 3, 0, dict(ed_capacity_max_hz=0.4e9, num_subcarriers=1)),
    # regression: an isolated ED holds two tasks and room for one; Greedy used to run partial
    # stages of the doomed one (its look-ahead ignored the capacity already held) and lost to LC
    (3, 5, 1, {}),
]


@pytest.mark.parametrize("num_devices,num_tasks,seed,changes", MULTI)
def test_exact_below_greedy_below_lc(num_devices, num_tasks, seed, changes):
    cfg = small_config(num_devices, **changes)
    counts = spread_tasks(num_tasks, num_devices)
    res = solve_exact(cfg, seed=seed, initial_tasks=counts)
    assert res.status == "optimal"
    assert res.lower_bound <= res.cost + 1e-9
    greedy = run_policy("Greedy", cfg, seed, counts)
    lc = run_policy("LC", cfg, seed, counts)
    assert greedy["constraints_ok"] and lc["constraints_ok"]
    assert res.cost <= greedy["system_cost"] + 1e-9
    assert greedy["system_cost"] <= lc["system_cost"] + 1e-9


@pytest.mark.parametrize("num_devices,num_tasks,seed,changes", [
    (3, 3, 1, {}),
    # one slow ED, one subcarrier: two tasks must stall while the first sends its data, and in
    # the env a task can only stall on a full node (the realisable model E is needed)
    (1, 3, 1, dict(ed_capacity_max_hz=0.5e9, num_subcarriers=1)),
])
def test_replay_reproduces_cost(num_devices, num_tasks, seed, changes):
    cfg = small_config(num_devices, **changes)
    counts = spread_tasks(num_tasks, num_devices)
    res = solve_exact(cfg, seed=seed, initial_tasks=counts)
    assert len(res.actions) == cfg.episode_slots
    assert all(a.shape == (cfg.max_tasks, 4) for a in res.actions)
    played = run_policy(res.actions, cfg, seed, counts)  # a fresh env, the same seed and options
    assert played["system_cost"] == pytest.approx(res.cost, rel=1e-9, abs=1e-9)
    assert played["constraints_ok"]
    assert played["completions"] + played["failures"] == num_tasks  # every task ended
    assert res.status in ("optimal", "gap") and res.lower_bound <= res.cost + 1e-9
    assert res.num_variables > 0


def test_waiting_needs_a_full_node():
    """The relaxation lets tasks wait for the single subcarrier; the env lets a task wait only on
    a full node. Exact's plan makes one task fill the ED (conv1 at 100 %) so that another may
    wait: a wait event appears in the played plan and the env follows it."""
    cfg = small_config(1, ed_capacity_max_hz=0.5e9, num_subcarriers=1)
    res = solve_exact(cfg, seed=1, initial_tasks=[3])
    assert res.model == "E"
    events = [ev for plan in res.plan.values() for ev in plan.values()]
    assert any(ev[0] == "wait" for ev in events)
    assert run_policy(res.actions, cfg, 1, [3])["system_cost"] == pytest.approx(res.cost, rel=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="arrival_rate_hz"):
        solve_exact(small_config(2, arrival_rate_hz=0.5), initial_tasks=[1, 0])
    with pytest.raises(ValueError, match="background_load_max"):
        solve_exact(small_config(2, background_load_max=0.1), initial_tasks=[1, 0])
    with pytest.raises(ValueError, match="episode_slots"):
        solve_exact(small_config(2, episode_slots=4), initial_tasks=[1, 0])
    with pytest.raises(ValueError, match="exactly one task"):
        exhaustive_single_task(small_config(2), initial_tasks=[1, 1])
    with pytest.raises(ValueError, match="env_or_config"):
        solve_exact({"num_devices": 2})


def test_solve_time_table_quick():
    rows = solve_time_table(sizes=((1, 1), (2, 2)), seeds=(0,))
    assert [(r["num_devices"], r["num_tasks"]) for r in rows] == [(1, 1), (2, 2)]
    for r in rows:
        assert r["solve_s"] > 0 and r["num_variables"] > 0
        assert r["status"] == "optimal"
        assert r["exact_cost"] <= r["greedy_cost"] + 1e-9 <= r["lc_cost"] + 2e-9
