"""Live ipywidgets of the chapters "System cost and the optimisation problem" and "The DCI
system in time".

Each builder returns an ``ipywidgets.VBox`` whose controls recompute with :mod:`dcicore` in the
running kernel (JupyterLab, Binder). On the static book pages a widget shows only the state it
was saved in; the chapters therefore also draw plotly figures with built-in sliders over
precomputed values. The figures come from :mod:`dcicore.plots_dci`.
"""

from __future__ import annotations

from dataclasses import replace

import ipywidgets as widgets
import numpy as np

from dcicore.config import SystemConfig
from dcicore.experiments import best_plan, single_task_plans, sweep_baselines
from dcicore.plots_dci import node_label, policy_bars_figure, weight_slider_figure
from dcicore.scenario import make_scenario

__all__ = ["weight_explorer", "sweep_explorer"]


def weight_explorer(config: SystemConfig | None = None, seed: int = 0, source: int = 1,
                    w_energy: float = 0.8) -> widgets.VBox:
    """ω_e slider, scenario seed and source ED -> best plan of one task (chapter 3).

    Moving ω_e sets ω_d = 1 − ω_e and redraws the heat map of the least cost per
    (split point, node); the seed redraws the scenario (positions, capacities); the source
    picks the ED that owns the task.
    """
    config = config if config is not None else SystemConfig()
    w = widgets.FloatSlider(value=w_energy, min=0.0, max=1.0, step=0.05, description="ω_e",
                            continuous_update=False, readout_format=".2f")
    s = widgets.IntSlider(value=seed, min=0, max=50, description="scenario seed",
                          continuous_update=False, style={"description_width": "initial"})
    src = widgets.Dropdown(options=[(f"ED {n}", n) for n in range(1, config.num_devices + 1)],
                           value=source, description="source")
    out = widgets.Output()
    cache = {}

    def plans_for(seed_, source_):
        key = (seed_, source_)
        if key not in cache:
            sc = make_scenario(config, np.random.default_rng(seed_))
            cache[key] = (sc, single_task_plans(config, sc, source_))
        return cache[key]

    def redraw(we, seed_, source_):
        sc, plans = plans_for(seed_, source_)
        with out:
            out.clear_output(wait=True)
            cap = sc.capacity_hz[source_] / 1e9
            try:
                b = best_plan(plans, we, 1.0 - we)
            except ValueError:
                print(f"ED {source_} ({cap:.2f} GHz): no plan meets the deadline.")
                return
            node = "its own CPU" if b["split"] == config.num_layers else node_label(b["node"])
            print(f"ED {source_} ({cap:.2f} GHz), reaches the MEC: {bool(sc.link[source_, 0])}. "
                  f"Best plan: {b['split']} layer(s) local at {b['share_local']:.0%}, rest on "
                  f"{node} at {b['share_remote']:.0%}; delay {b['delay_s']:.3g} s, "
                  f"energy {b['energy_j']:.3g} J, cost {b['cost']:.3g}.")
            weight_slider_figure(plans, [we]).show()

    controls = widgets.HBox([w, s, src])
    widgets.interactive_output(redraw, {"we": w, "seed_": s, "source_": src})
    return widgets.VBox([controls, out])


def sweep_explorer(config: SystemConfig | None = None,
                   policies=("LC", "EC", "Random", "Greedy"), num_devices: int = 20,
                   arrival_rate_hz: float | None = None, episodes: int = 3,
                   seed: int = 0) -> widgets.VBox:
    """N, λ and episode sliders -> system cost and completion of each scheme (chapter 4).

    Each change runs :func:`dcicore.experiments.sweep_baselines` for the chosen (N, λ).
    """
    config = config if config is not None else SystemConfig()
    lam0 = config.arrival_rate_hz if arrival_rate_hz is None else arrival_rate_hz
    n = widgets.IntSlider(value=num_devices, min=1, max=60, description="N (EDs)",
                          continuous_update=False)
    lam = widgets.FloatSlider(value=lam0, min=0.05, max=2.0, step=0.05, description="λ (1/s)",
                              continuous_update=False, readout_format=".2f")
    ep = widgets.IntSlider(value=episodes, min=1, max=20, description="episodes",
                           continuous_update=False)
    out = widgets.Output()

    def redraw(n_, lam_, ep_):
        rows = sweep_baselines(list(policies), [n_], replace(config, arrival_rate_hz=lam_),
                               episodes=ep_, seed=seed)
        with out:
            out.clear_output(wait=True)
            policy_bars_figure(rows, title=f"N = {n_}, λ = {lam_:.2f} tasks/s per ED, "
                                           f"{ep_} episode(s)").show()

    widgets.interactive_output(redraw, {"n_": n, "lam_": lam, "ep_": ep})
    return widgets.VBox([widgets.HBox([n, lam, ep]), out])
