"""Tests for dcicore.plots_model (figure builders of chapters 1, 2 and 5) and dcicore.widgets.

The numbers are worked by hand from Sec 5.1 of the paper where they are checked exactly; the
figure tests check what a reader relies on: which traces a slider or menu shows, and that the
static explorers hold the same numbers as the functions they precompute.
"""

from __future__ import annotations

import numpy as np
import pytest

from dcicore import plots_model as pm
from dcicore.config import SystemConfig
from dcicore.env import DCIEnv
from dcicore.profiles import paper_model

CFG = SystemConfig()


# ---------------------------------------------------------------- static controls


def _visible_indices(fig_or_args):
    vis = fig_or_args if isinstance(fig_or_args, list) else [t.visible for t in fig_or_args.data]
    return [i for i, v in enumerate(vis) if v]


def test_grid_controls_menu_replaces_slider():
    fig = pm.workload_explorer_figure(xi_values=(1, 4, 7), rules=("rule", "printed"), xi_active=4)
    # initial: menu row 0 ("rule"), slider step 1 (xi = 4): trace 1
    assert _visible_indices(fig) == [1]
    menu = fig.layout.updatemenus[0]
    printed = menu.buttons[1]
    assert _visible_indices(printed.args[0]["visible"]) == [3 + 1]
    new_slider = printed.args[1]["sliders"][0]
    # after choosing "printed", slider step s shows trace 3 + s
    assert [_visible_indices(step["args"][0]["visible"]) for step in new_slider["steps"]] == [[3], [4], [5]]
    assert new_slider["active"] == 1
    assert "printed" in printed.args[1]["title.text"]


def test_grid_controls_rejects_wrong_trace_count():
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(y=[1]), go.Scatter(y=[2]), go.Scatter(y=[3])])
    with pytest.raises(ValueError, match="traces"):
        pm.add_grid_controls(fig, ["a", "b"], ["x", "y"], 1, "s")


def test_visibility_slider_keeps_always_visible_traces():
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(y=[i]) for i in range(5)])  # 1 legend trace + 2 steps of 2
    pm.add_visibility_slider(fig, ["a", "b"], 2, "step", active=1, always_visible=1)
    assert _visible_indices(fig) == [0, 3, 4]
    steps = fig.layout.sliders[0].steps
    assert _visible_indices(steps[0].args[0]["visible"]) == [0, 1, 2]


# ---------------------------------------------------------------- chapter 1


def test_layer_table_lists_every_layer_and_the_total():
    table = pm.layer_table_markdown(paper_model())
    lines = table.splitlines()
    assert len(lines) == 2 + 1 + 8 + 1  # header, rule, input, 8 layers, total
    assert "| 3 | conv3 | 64×8×8 | 17,825,792 | 178,257,920 | 262,144 |" in table  # 64·16·16·64·17
    assert "743,844,550" in lines[-1]


def test_split_points_by_hand():
    sp = pm.split_points(paper_model())
    assert sp["k"].tolist() == list(range(9))
    assert sp["bits_sent"][0] == 3 * 64 * 64 * 64  # raw input
    assert sp["bits_sent"][2] == 64 * 16 * 16 * 64  # conv2's output
    assert sp["bits_sent"][8] == 0
    assert sp["device_cycles"][1] == 8_355_840  # conv1: 3·64·64·4·17·10
    np.testing.assert_allclose(sp["device_cycles"] + sp["remote_cycles"], 743_844_550)
    with_result = pm.split_points(paper_model(), return_result=True)
    assert with_result["bits_sent"][8] == 0 and with_result["bits_sent"][0] == sp["bits_sent"][0] + 9 * 64


def test_workload_explorer_matches_profiles():
    xis = (1, 10)
    fig = pm.workload_explorer_figure(xi_values=xis, xi_active=10)
    for m, rule in enumerate(("rule", "printed")):
        for s, xi in enumerate(xis):
            np.testing.assert_allclose(fig.data[m * 2 + s].y, paper_model(xi, rule).workload_cycles)
    np.testing.assert_allclose(pm.workload_figure(4.0, "printed").data[0].y, paper_model(4.0, "printed").workload_cycles)


# ---------------------------------------------------------------- chapter 2


def test_split_breakdown_by_hand():
    b = pm.split_point_breakdown(CFG, ed_capacity_hz=1e9, share=1.0, distance_m=100.0)
    total = 743_844_550
    # k = 8: all local at 1 GHz; Eq 1 and Eq 4 (1e-26 · C · 1e18)
    assert b["delay_s"][8] == pytest.approx(total / 1e9)
    assert b["energy_j"][8] == pytest.approx(1e-26 * total * 1e18)
    # k = 0: the input goes over one of 10 subcarriers at 100 m (g = 1e-8), then the MEC at 10 GHz
    rate = 2e6 * np.log2(1 + 1e-8 * 1.0 / CFG.noise_w)
    assert b["rate_bps"] == pytest.approx(rate)
    assert b["delay_s"][0] == pytest.approx(786_432 / rate + total / 1e10)
    assert b["energy_j"][0] == pytest.approx(786_432 / rate + 1e-26 * total * 1e20)
    # parts add up
    np.testing.assert_allclose(b["comp_ed_s"] + b["trans_s"] + b["comp_mec_s"], b["delay_s"])


def test_split_breakdown_share_and_subcarriers():
    half = pm.split_point_breakdown(CFG, share=0.5)
    full = pm.split_point_breakdown(CFG, share=1.0)
    np.testing.assert_allclose(half["comp_ed_s"], 2 * full["comp_ed_s"])  # Eq 1: 1/r
    np.testing.assert_allclose(half["energy_ed_j"], full["energy_ed_j"] / 4)  # Eq 4: r²
    more = pm.split_point_breakdown(CFG, num_subcarriers=20)
    assert more["rate_bps"] == pytest.approx(full["rate_bps"] / 2)  # Eq 2: B/S


def test_split_explorer_cells_match_breakdown():
    shares, dists = (0.1, 1.0), (25, 250)
    fig = pm.split_explorer_figure(CFG, shares=shares, distances_m=dists, share_active=1.0, distance_active=25)
    assert len(fig.data) == 2 * 2 * 8
    for m, d in enumerate(dists):
        for s, sh in enumerate(shares):
            b = pm.split_point_breakdown(CFG, 1e9, sh, d)
            cell = (m * 2 + s) * 8
            np.testing.assert_allclose(np.asarray(fig.data[cell + 3].y, float), b["delay_s"])
            np.testing.assert_allclose(np.asarray(fig.data[cell + 7].y, float), b["energy_j"])
    assert _visible_indices(fig) == list(range(8, 16))  # menu 25 m (row 0), slider 100 % (step 1)


def test_cost_optimal_rate_closed_form_and_grid():
    r_star = pm.cost_optimal_rate_hz(0.8, 0.2, 1e-26)
    assert r_star == pytest.approx((0.2 / 1.6e-26) ** (1 / 3))  # 1.25e25^(1/3) ≈ 2.32e8 Hz
    rates = np.logspace(7, 10, 3001)
    for c in (1e6, 7.4e8):
        curve = pm.rate_cost_curve(CFG, c, rates)
        assert rates[np.argmin(curve["cost"])] == pytest.approx(r_star, rel=0.01)


def test_rate_cost_figure_marks_r_star():
    fig = pm.rate_cost_figure(CFG, 7.4e8, np.logspace(8, 10, 50), deadline_rate_hz=2.5e8)
    star = [t for t in fig.data if t.name and t.name.startswith("r*")][0]
    assert star.x[0] == pytest.approx(pm.cost_optimal_rate_hz(CFG.w_energy, CFG.w_delay, CFG.k0) / 1e9)


# ---------------------------------------------------------------- chapter 5


def _env_with_tasks(seed=3, steps=3):
    from dcicore.baselines import greedy

    cfg = SystemConfig(num_devices=4)
    env = DCIEnv(cfg)
    obs, _ = env.reset(seed=seed, options={"initial_tasks": [1, 1, 1, 1]})
    for _ in range(steps):
        obs, *_ = env.step(greedy(env))
    return cfg, env, obs


def test_state_graph_counts_match_observation():
    cfg, env, obs = _env_with_tasks()
    g = pm.state_graph(obs, cfg)
    active = np.flatnonzero(obs["task_location"] >= 0)
    assert g["rows"] == active.tolist()
    assert len(g["alpha"]) == cfg.num_nodes and g["alpha"][0]["is_mec"]
    assert len(g["beta"]) == cfg.num_layers * active.size
    assert len(g["order"]) == (cfg.num_layers - 1) * active.size
    assigned = obs["assignment"].reshape(cfg.max_tasks, cfg.num_layers)[active]
    assert len(g["assign"]) == int((assigned >= 0).sum())
    links = np.triu(obs["node_links"] > 0, 1)
    assert len(g["links"]) == int(links.sum())
    # every assignment edge points at a layer marked done or running
    assert all(g["beta"][b]["status"] in ("done", "running") for _, b in g["assign"])


def test_state_graph_figure_slider_over_observations():
    cfg, env, obs0 = _env_with_tasks(steps=0)
    env.action_space.seed(0)
    obs1, *_ = env.step(env.action_space.sample())
    fig = pm.state_graph_figure([obs0, obs1], cfg)
    n_legend = 4
    assert len(fig.data) == n_legend + 2 * 6
    # the last observation is shown first; the legend traces stay on
    assert _visible_indices(fig) == list(range(n_legend)) + list(range(n_legend + 6, n_legend + 12))
    first = pm.state_graph_figure([obs0, obs1], cfg, active=0)
    assert _visible_indices(first) == list(range(n_legend)) + list(range(n_legend, n_legend + 6))


def test_masks_figure_shows_ready_rows():
    cfg, env, _ = _env_with_tasks(steps=0)
    masks = env.action_masks()
    fig = pm.masks_figure(masks, cfg)
    assert len(fig.data[0].y) == int(masks["ready"].sum())
    np.testing.assert_array_equal(fig.data[2].y, masks["max_level"])


def test_penalty_ranking_titles_follow_costs():
    fake = {
        0: {"LC": {"system_cost": 1.0, "completion_rate": 0.5}, "EC": {"system_cost": 2.0, "completion_rate": 0.9}},
        10: {"LC": {"system_cost": 11.0, "completion_rate": 0.5}, "EC": {"system_cost": 3.0, "completion_rate": 0.9}},
    }
    fig = pm.penalty_ranking_figure(fake, [0, 10], active_penalty=10)
    steps = fig.layout.sliders[0].steps
    assert "LC < EC" in steps[0].args[1]["title.text"]
    assert "EC < LC" in steps[1].args[1]["title.text"]
    assert _visible_indices(fig) == [1]


# ---------------------------------------------------------------- widgets


def test_workload_widget_recomputes_on_change():
    from dcicore.widgets import workload_widget

    w = workload_widget(cycles_per_op=10.0)
    w.controls["cycles_per_op"].value = 5.0
    w.controls["conv3_rule"].value = "printed"
    np.testing.assert_allclose(w.figure().data[0].y, paper_model(5.0, "printed").workload_cycles)


def test_split_widget_passes_every_control():
    from dcicore.widgets import split_widget

    w = split_widget(CFG)
    w.controls["share"].value = 0.5
    w.controls["num_subcarriers"].value = 20
    w.controls["ed_capacity_ghz"].value = 0.5
    fig = w.figure()
    b = pm.split_point_breakdown(CFG, 0.5e9, 0.5, w.controls["distance_m"].value, 20)
    np.testing.assert_allclose(np.asarray(fig.data[3].y, float), b["delay_s"])


def test_penalty_widget_evaluates_live():
    from dcicore.baselines import evaluate
    from dcicore.widgets import penalty_widget

    cfg = SystemConfig(num_devices=3, episode_slots=6)
    w = penalty_widget(cfg, policies=("LC", "EC"), episodes=1, seed=0)
    w.controls["penalty"].value = 7.0
    fig = w.figure()
    expected = evaluate("EC", SystemConfig(num_devices=3, episode_slots=6, penalty=7.0), episodes=1, seed=0)
    assert fig.data[0].y[1] == pytest.approx(expected["system_cost"])
