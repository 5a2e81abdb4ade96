"""ipywidgets for live exploration of the system-model chapters (JupyterLab, Binder).

Used by the book's chapters "Edge inference and DNN partitioning" (:func:`workload_widget`),
"Delay and energy" (:func:`split_widget`) and "The MDP" (:func:`penalty_widget`,
:func:`state_widget`). Every widget is a :class:`LiveFigure`: a few controls and a plotly figure
that is recomputed, by the figure builders of :mod:`dcicore.plots_model`, whenever a control
moves.

On the book's static pages ipywidgets cannot compute (there is no kernel), so the chapters tag
the cells that build these widgets ``skip-execution``: the book build shows their code only,
and the same exploration is offered there as a plotly figure with sliders over precomputed
values. In JupyterLab, or under nbval, the cells run as usual.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import ipywidgets as W
import plotly.graph_objects as go
from IPython.display import clear_output

from dcicore.config import SystemConfig

__all__ = ["LiveFigure", "workload_widget", "split_widget", "penalty_widget", "state_widget"]

_STYLE = {"description_width": "initial"}
_LAYOUT = W.Layout(width="360px")


class LiveFigure(W.VBox):
    """Controls plus a figure that ``make_figure(**values)`` redraws when a control changes.

    Attributes
    ----------
    controls : dict of name -> ipywidget (its ``value`` is passed to ``make_figure`` under name)
    out : ipywidgets.Output holding the figure
    """

    def __init__(self, controls: dict, make_figure: Callable[..., go.Figure], columns: int = 2):
        self.controls = dict(controls)
        self.make_figure = make_figure
        self.out = W.Output()
        widgets = list(self.controls.values())
        grid = [W.HBox(widgets[i : i + columns]) for i in range(0, len(widgets), columns)]
        super().__init__(children=[*grid, self.out])
        for w in widgets:
            w.observe(self._on_change, names="value")
        self.refresh()

    def values(self) -> dict:
        """The current value of every control, by name."""
        return {name: w.value for name, w in self.controls.items()}

    def figure(self) -> go.Figure:
        """The figure for the current values (computed, not displayed)."""
        return self.make_figure(**self.values())

    def refresh(self) -> None:
        """Recompute the figure and show it in :attr:`out`."""
        fig = self.figure()
        with self.out:
            clear_output(wait=True)
            fig.show()

    def _on_change(self, change) -> None:
        self.refresh()


def _slider(description, value, lo, hi, step, fmt=None, log=False):
    if log:
        return W.FloatLogSlider(value=value, base=10, min=lo, max=hi, step=step, description=description,
                                style=_STYLE, layout=_LAYOUT, continuous_update=False, readout_format=fmt or ".3g")
    cls = W.IntSlider if isinstance(step, int) and isinstance(value, int) else W.FloatSlider
    kw = dict(readout_format=fmt) if fmt and cls is W.FloatSlider else {}
    return cls(value=value, min=lo, max=hi, step=step, description=description, style=_STYLE,
               layout=_LAYOUT, continuous_update=False, **kw)


def workload_widget(cycles_per_op: float = 10.0, conv3_rule: str = "rule") -> LiveFigure:
    """Chapter 1: choose ξ (cycles per operation) and the conv3 rule; bars of C^l update."""
    from dcicore.plots_model import workload_figure

    controls = {
        "cycles_per_op": _slider("ξ (cycles per operation)", cycles_per_op, 1.0, 20.0, 0.5, ".1f"),
        "conv3_rule": W.ToggleButtons(options=["rule", "printed"], value=conv3_rule, description="conv3",
                                      style=_STYLE),
    }
    return LiveFigure(controls, workload_figure)


def split_widget(config: SystemConfig | None = None, share: float = 1.0, distance_m: float = 100.0) -> LiveFigure:
    """Chapter 2: share, ED–MEC distance, subcarriers S and ED capacity; delay and energy of every
    split point (:func:`dcicore.plots_model.split_delay_energy_figure`) update."""
    from dcicore.plots_model import split_delay_energy_figure

    config = SystemConfig() if config is None else config
    controls = {
        "share": _slider("compute share", share, 0.01, 1.0, 0.01, ".2f"),
        "distance_m": _slider("ED–MEC distance (m)", distance_m, config.min_distance_m, config.mec_range_m, 5.0, ".0f"),
        "num_subcarriers": _slider("subcarriers S", config.num_subcarriers, 1, 50, 1),
        "ed_capacity_ghz": _slider("ED capacity (GHz)", config.ed_capacity_max_hz / 1e9,
                                   config.ed_capacity_min_hz / 1e9, config.ed_capacity_max_hz / 1e9, 0.05, ".2f"),
    }

    def make(share, distance_m, num_subcarriers, ed_capacity_ghz):
        return split_delay_energy_figure(config, ed_capacity_ghz * 1e9, share, distance_m, num_subcarriers)

    return LiveFigure(controls, make)


def penalty_widget(config: SystemConfig | None = None, policies=("LC", "EC", "Greedy"), episodes: int = 3,
                   seed: int = 0) -> LiveFigure:
    """Chapter 5: penalty P and number of EDs N; every policy is evaluated live
    (:func:`dcicore.baselines.evaluate`) and the bars show its system cost (= −return of Eq 13)."""
    from dcicore.baselines import evaluate
    from dcicore.plots_model import penalty_ranking_figure

    config = SystemConfig(num_devices=4) if config is None else config
    controls = {
        "penalty": _slider("penalty P", config.penalty, 0.0, 50.0, 1.0, ".0f"),
        "num_devices": _slider("EDs N", config.num_devices, 2, 20, 1),
    }

    def make(penalty, num_devices):
        cfg = replace(config, penalty=float(penalty), num_devices=int(num_devices))
        res = {float(penalty): {p: evaluate(p, cfg, episodes=episodes, seed=seed) for p in policies}}
        fig = penalty_ranking_figure(res, [float(penalty)])
        fig.update_layout(sliders=[])
        return fig

    return LiveFigure(controls, make)


def state_widget(config: SystemConfig | None = None, seed: int = 3, slots: int = 8, policy: str = "Greedy",
                 initial_tasks=None) -> LiveFigure:
    """Chapter 5: the graph state after t slots of ``policy``, for a chosen seed."""
    from dcicore.baselines import make_policy
    from dcicore.env import DCIEnv
    from dcicore.plots_model import state_graph_figure

    config = SystemConfig(num_devices=4) if config is None else config
    controls = {
        "seed": _slider("seed", seed, 0, 50, 1),
        "slot": _slider("slot t", 0, 0, slots, 1),
    }

    def make(seed, slot):
        env = DCIEnv(config)
        obs, _ = env.reset(seed=int(seed), options={"initial_tasks": initial_tasks} if initial_tasks is not None else None)
        act = make_policy(policy, int(seed))
        for _ in range(int(slot)):
            obs, *_ = env.step(act(env))
        fig = state_graph_figure([obs], config, labels=[f"slot {slot}"])
        fig.update_layout(sliders=[])
        return fig

    return LiveFigure(controls, make)
