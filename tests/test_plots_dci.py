"""dcicore.plots_dci: the figures carry the data they claim, and their static controls work."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from dcicore import plots_dci
from dcicore.config import SystemConfig
from dcicore.experiments import best_plan, single_task_plans, sweep_baselines, trace_episode
from dcicore.scenario import make_scenario

CFG = SystemConfig(num_devices=6)


@pytest.fixture(scope="module")
def plans():
    sc = make_scenario(CFG, np.random.default_rng(3))
    src = int(np.flatnonzero(sc.link[1:, 0])[0]) + 1  # an ED that reaches the MEC
    return single_task_plans(CFG, sc, src)


@pytest.fixture(scope="module")
def trace():
    return trace_episode("Greedy", SystemConfig(num_devices=4, episode_slots=5), seed=1)


def _no_latex(fig: go.Figure):
    text = fig.to_json()
    assert "$" not in text, "plotly text must not contain LaTeX (see dcicore.plots)"
    json.loads(text)


def test_cost_grid_matches_best_plan(plans):
    for we in (0.1, 0.5, 0.8):
        nodes, splits, grid = plots_dci.cost_grid(plans, we, 1 - we)
        b = best_plan(plans, we, 1 - we)
        assert np.nanmin(grid) == pytest.approx(b["cost"])
        r, s = np.unravel_index(np.nanargmin(grid), grid.shape)
        assert splits[s] == b["split"]
        assert nodes[r] == b["node"]
        assert nodes[0] == plans["source"]
        # the source row holds only the all-local plan
        assert np.all(np.isnan(grid[0, :-1]))


def test_weight_slider_figure(plans):
    weights = [0.0, 0.2, 0.8, 1.0]
    fig = plots_dci.weight_slider_figure(plans, weights)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0.00", "0.20", "0.80", "1.00"]
    assert fig.layout.sliders[0].active == 2  # starts at the paper's ω_e = 0.8
    for we, step in zip(weights, steps):
        b = best_plan(plans, we, 1 - we)
        star_x = step.args[0]["x"][1][0]
        assert star_x == b["split"]
        z = np.array(step.args[0]["z"][0], dtype=float)
        assert np.nanmin(z) == pytest.approx(1.0)
    _no_latex(fig)
    single = plots_dci.weight_slider_figure(plans, [0.5])
    assert len(single.layout.sliders) == 0


def test_tradeoff_figure(plans):
    few = single_task_plans(CFG, make_scenario(CFG, np.random.default_rng(3)), int(plans["source"]),
                            shares=[0.25, 0.5, 1.0])
    b = best_plan(plans, 0.8, 0.2)
    fig = plots_dci.tradeoff_figure(few, marks={"best": b})
    n_points = sum(len(t.x) for t in fig.data if t.mode == "markers")
    assert n_points == few["split"].size
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    assert np.all(np.diff(np.array(front.x)) >= 0)
    assert np.all(np.diff(np.array(front.y)) <= 0)  # slower plans on the front use less energy
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    _no_latex(fig)


def test_solve_time_exact_and_decision_space_figures():
    rows = [dict(num_devices=n, num_tasks=q, num_variables=v, num_constraints=10, solve_s=t,
                 status="optimal", exact_cost=e, greedy_cost=g, lc_cost=lc)
            for n, q, v, t, e, g, lc in ((1, 1, 100, 0.1, 1.0, 1.2, 10.0), (1, 2, 1000, 1.0, 2.0, 2.5, 20.0),
                                         (2, 2, 500, 0.5, 1.9, 3.0, 1.9))]
    fig = plots_dci.solve_time_figure(rows)
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log" and fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == [100, 1000] and list(fig.data[0].y) == [0.1, 1.0]
    fig = plots_dci.exact_comparison_figure(rows)
    assert [t.name for t in fig.data] == ["Exact", "Greedy", "LC"]
    assert list(fig.data[1].y) == [1.2, 2.5, 3.0]
    _no_latex(fig)
    tab = plots_dci.html_table(rows[:1] + [dict(rows[0], status="<b>")], {"num_devices": "N", "solve_s": "s", "status": "st"})
    assert "<th>N</th><th>s</th><th>st</th>" in tab.data
    assert "<tr><td>1</td><td>0.1</td><td>optimal</td></tr>" in tab.data
    assert "&lt;b&gt;" in tab.data  # cell text is escaped
    rows = [{"num_devices": n, "log10_per_slot": 10.0 * n, "log10_per_episode": 400.0 * n} for n in (5, 10)]
    fig = plots_dci.decision_space_figure(rows)
    assert list(fig.data[0].y) == [50.0, 100.0]
    _no_latex(fig)


def test_scenario_map(trace):
    cfg = trace["config"]
    fig = plots_dci.scenario_map_figure(trace["positions_m"], trace["link"], trace["capacity_hz"], cfg)
    eds = [t for t in fig.data if t.name and t.name.startswith("ED ") and "link" not in t.name]
    assert sum(len(t.x) for t in eds) == cfg["num_devices"]
    out = [t for t in fig.data if t.name == "ED out of MEC range"]
    assert sum(len(t.x) for t in out) == int((~trace["link"][1:, 0]).sum())
    _no_latex(fig)


def test_free_share_figures(trace):
    fig = plots_dci.free_share_figure(trace)
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == 3
    before = np.array(buttons[0].args[0]["z"][0])
    np.testing.assert_allclose(before, trace["free_before"].T * 100)
    taken = np.array(buttons[2].args[0]["z"][0])
    np.testing.assert_allclose(taken, (trace["free_before"] - trace["free_after"]).T * 100)
    fig = plots_dci.free_share_slots_figure(trace)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == trace["free_before"].shape[0]
    np.testing.assert_allclose(steps[2].args[0]["y"][1], trace["free_after"][2] * 100)
    _no_latex(fig)


def test_baselines_figure_and_slider():
    small = SystemConfig(num_devices=2, episode_slots=5)
    rows = []
    for lam in (0.5, 1.0):
        rows += sweep_baselines(["LC", "EC"], [2, 3], small, episodes=1, arrival_rate_hz=lam)
    fig = plots_dci.baselines_figure(rows, slider_key="arrival_rate_hz")
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0.5", "1"]
    for s in steps:
        vis = s.args[0]["visible"]
        assert sum(vis) == 4  # 2 schemes × (cost, completion)
    # the first step's visible traces carry the λ = 0.5 rows
    shown = [t for t, v in zip(fig.data, steps[0].args[0]["visible"]) if v]
    lc_cost = [r["system_cost"] for r in rows if r["policy"] == "LC" and r["arrival_rate_hz"] == 0.5]
    assert list(shown[0].y) == pytest.approx(lc_cost)
    one = plots_dci.baselines_figure([r for r in rows if r["arrival_rate_hz"] == 0.5])
    assert not one.layout.sliders and one.data[0].error_y.array is not None
    bars = plots_dci.policy_bars_figure([r for r in rows if r["num_devices"] == 2 and r["arrival_rate_hz"] == 1.0])
    assert list(bars.data[0].x) == ["LC", "EC"]
    _no_latex(fig)


def test_live_widgets_recompute(monkeypatch, capsys):
    """The ipywidgets builders redraw when a control moves (outside a kernel the output is
    printed; the 'json' renderer keeps plotly from opening anything)."""
    import plotly.io as pio

    from dcicore import widgets_dci

    monkeypatch.setattr(pio.renderers, "default", "json")
    box = widgets_dci.weight_explorer(SystemConfig(num_devices=10), seed=3, source=4)
    slider = box.children[0].children[0]
    capsys.readouterr()
    slider.value = 0.1
    out = capsys.readouterr().out
    assert "Best plan" in out and "= 0.10" in out and "heatmap" in out
    box = widgets_dci.sweep_explorer(SystemConfig(num_devices=2, episode_slots=4), ("LC", "EC"),
                                     num_devices=2, episodes=1)
    n_slider = box.children[0].children[0]
    capsys.readouterr()
    n_slider.value = 3
    out = capsys.readouterr().out
    assert "N = 3" in out and "'LC'" in out
