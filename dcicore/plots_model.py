"""Plotly figures (and the small computations behind them) for the system-model chapters.

Explained in, and used by, the book's chapters "Edge inference and DNN partitioning"
(layer profile, split trade-off, workload explorer), "Delay and energy" (Eqs 1–5 along the
split point, the cost-optimal rate) and "The MDP" (graph state, masks, penalty and ranking).

Every builder returns a :class:`plotly.graph_objects.Figure` and computes nothing the package
does not already define: the per-layer numbers come from :mod:`dcicore.profiles`, the delays and
energies from the equation functions of :mod:`dcicore.costs`, the states from
:class:`dcicore.env.DCIEnv`. Figures that must stay explorable on a static page carry plotly
sliders and drop-down menus over values computed in advance (no Python runs in the browser);
:func:`add_grid_controls` combines a slider and a menu so that both parameters really combine.

Text in figures is plain Unicode/HTML (no ``$...$``; see :mod:`dcicore.plots`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcicore import costs
from dcicore.config import SystemConfig
from dcicore.profiles import LAYER_NAMES, TENSOR_SHAPES, ModelProfile, paper_model

__all__ = [
    "add_visibility_slider",
    "add_grid_controls",
    "layer_table_markdown",
    "layer_profile_figure",
    "split_points",
    "split_tradeoff_figure",
    "workload_figure",
    "workload_explorer_figure",
    "flop_table_markdown",
    "split_point_breakdown",
    "split_delay_energy_figure",
    "split_explorer_figure",
    "cost_optimal_rate_hz",
    "rate_cost_curve",
    "rate_cost_figure",
    "state_graph",
    "state_graph_figure",
    "masks_figure",
    "penalty_ranking_figure",
    "with_penalty",
]

COLORS = {
    "ed": "#1f77b4",
    "trans": "#ff7f0e",
    "mec": "#2ca02c",
    "total": "#222222",
    "rule": "#1f77b4",
    "printed": "#d62728",
}
POLICY_COLORS = {"LC": "#1f77b4", "EC": "#ff7f0e", "Random": "#9467bd", "Greedy": "#2ca02c"}


# ------------------------------------------------------------------ static controls


def _visible(total: int, start: int, count: int) -> list[bool]:
    v = [False] * total
    v[start : start + count] = [True] * count
    return v


def add_visibility_slider(
    fig: go.Figure,
    labels,
    traces_per_step: int,
    name: str,
    active: int = 0,
    titles=None,
    always_visible: int = 0,
) -> go.Figure:
    """Give ``fig`` a slider that shows one group of traces at a time.

    The traces of ``fig`` must be laid out as ``always_visible`` traces first (shown at every
    step), then ``len(labels)`` groups of ``traces_per_step`` traces, in label order.
    ``titles`` (one per label) replaces the figure title at each step. Returns ``fig``.
    """
    n = len(labels)
    total = len(fig.data)
    if total != always_visible + n * traces_per_step:
        raise ValueError(
            f"fig must have always_visible + len(labels) * traces_per_step = "
            f"{always_visible + n * traces_per_step} traces, got {total}"
        )

    def vis(i):
        v = _visible(total, always_visible + i * traces_per_step, traces_per_step)
        v[:always_visible] = [True] * always_visible
        return v

    steps = []
    for i, lab in enumerate(labels):
        layout = {"title.text": titles[i]} if titles is not None else {}
        steps.append(dict(label=str(lab), method="update", args=[{"visible": vis(i)}, layout]))
    for trace, v in zip(fig.data, vis(active)):
        trace.visible = v
    if titles is not None:
        fig.update_layout(title_text=titles[active])
    fig.update_layout(
        sliders=[dict(active=active, steps=steps, currentvalue=dict(prefix=f"{name}: "), pad=dict(t=50))]
    )
    return fig


def add_grid_controls(
    fig: go.Figure,
    slider_labels,
    menu_labels,
    traces_per_cell: int,
    slider_name: str,
    slider_active: int = 0,
    menu_active: int = 0,
    titles=None,
    menu_xy=(1.0, 1.2),
    slider_y: float = 0.0,
) -> go.Figure:
    """A slider over one parameter and a drop-down menu over another, on precomputed traces.

    Traces must be grouped by cell, menu index major and slider index minor: cell
    ``(m, s)`` owns traces ``[(m * len(slider_labels) + s) * traces_per_cell, ...)``.
    ``titles[m][s]`` (optional) is the title of each cell. The menu sits at ``menu_xy`` (paper
    coordinates of its right edge), away from the title at the top left; a menu has no caption,
    so its labels should say what they choose (e.g. ``"d = 100 m"``).

    How two static controls combine: a slider step can only show fixed traces, so the menu
    does not just change visibility, it also *replaces the slider* with one whose steps point
    into the chosen menu row (a ``relayout`` of ``sliders``). After a menu choice the slider
    returns to ``slider_active``.
    """
    n_s, n_m = len(slider_labels), len(menu_labels)
    total = len(fig.data)
    if total != n_s * n_m * traces_per_cell:
        raise ValueError(
            f"fig must have len(slider_labels) * len(menu_labels) * traces_per_cell = "
            f"{n_s * n_m * traces_per_cell} traces, got {total}"
        )

    def vis(s, m):
        return _visible(total, (m * n_s + s) * traces_per_cell, traces_per_cell)

    def title(s, m):
        return {"title.text": titles[m][s]} if titles is not None else {}

    def slider(m):
        steps = [
            dict(label=str(lab), method="update", args=[{"visible": vis(s, m)}, title(s, m)])
            for s, lab in enumerate(slider_labels)
        ]
        return dict(
            active=slider_active, steps=steps, currentvalue=dict(prefix=f"{slider_name}: "), pad=dict(t=50),
            y=slider_y, yanchor="top",
        )

    buttons = [
        dict(
            label=str(lab),
            method="update",
            args=[{"visible": vis(slider_active, m)}, {"sliders": [slider(m)], **title(slider_active, m)}],
        )
        for m, lab in enumerate(menu_labels)
    ]
    for trace, v in zip(fig.data, vis(slider_active, menu_active)):
        trace.visible = v
    if titles is not None:
        fig.update_layout(title_text=titles[menu_active][slider_active])
    fig.update_layout(
        sliders=[slider(menu_active)],
        updatemenus=[
            dict(
                type="dropdown",
                active=menu_active,
                buttons=buttons,
                x=menu_xy[0],
                y=menu_xy[1],
                xanchor="right",
                yanchor="top",
                showactive=True,
            )
        ],
    )
    return fig


# ------------------------------------------------------------------ chapter 1: the model


def _shape_text(shape) -> str:
    return "×".join(str(s) for s in shape)


def layer_table_markdown(profile: ModelProfile) -> str:
    """A Markdown table: layer, output shape, operations, C (cycles), O (bits), and the total."""
    rows = [
        "| l | layer | output | operations | C<sup>l</sup> (cycles) | O<sup>l</sup> (bits) |",
        "|---:|---|---|---:|---:|---:|",
        f"| 0 | input | {_shape_text(TENSOR_SHAPES[0])} | | | {profile.input_bits:,.0f} |",
    ]
    for i, name in enumerate(profile.names):
        rows.append(
            f"| {i + 1} | {name} | {_shape_text(TENSOR_SHAPES[i + 1])} "
            f"| {profile.ops[i]:,.0f} | {profile.workload_cycles[i]:,.0f} | {profile.output_bits[i]:,.0f} |"
        )
    rows.append(f"| | **total** | | {profile.ops.sum():,.0f} | {profile.total_cycles:,.0f} | |")
    return "\n".join(rows)


def layer_profile_figure(profile: ModelProfile) -> go.Figure:
    """Per-layer workload C (cycles) and output size O (bits), two bar panels on log axes."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("workload C<sup>l</sup> (cycles)", "output O<sup>l</sup> (bits)")
    )
    names = list(profile.names)
    fig.add_bar(x=names, y=profile.workload_cycles, marker_color=COLORS["ed"], name="C (cycles)",
                hovertemplate="%{x}: %{y:.3s} cycles<extra></extra>", row=1, col=1)
    fig.add_bar(x=names, y=profile.output_bits, marker_color=COLORS["trans"], name="O (bits)",
                hovertemplate="%{x}: %{y:.3s} bits<extra></extra>", row=1, col=2)
    fig.add_hline(y=profile.input_bits, line_dash="dot", line_color="grey", row=1, col=2,
                  annotation_text="input (3×64×64 values)", annotation_position="top right")
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_layout(showlegend=False, height=420, margin=dict(t=60, b=40),
                      title_text="The 8-layer model, layer by layer", title_font_size=13)
    return fig


def split_points(profile: ModelProfile, return_result: bool = False) -> dict:
    """The L+1 split points of a two-node partition: layers 1..k on the device, k+1..L elsewhere.

    Returns arrays of length L+1 (k = 0..L): ``k``; ``device_cycles`` Σ_{l≤k} C^l;
    ``remote_cycles`` Σ_{l>k} C^l; ``bits_sent`` the data crossing the link: the raw input at
    k = 0, O^k for 0 < k < L, and nothing at k = L (plus the final result if ``return_result``).
    """
    L = profile.num_layers
    cum = np.concatenate([[0.0], np.cumsum(profile.workload_cycles)])
    bits = np.concatenate([[profile.input_bits], profile.output_bits[:-1], [0.0]])
    if return_result:
        bits[:-1] += profile.output_bits[-1]
    return {
        "k": np.arange(L + 1),
        "device_cycles": cum,
        "remote_cycles": cum[-1] - cum,
        "bits_sent": bits,
    }


def _split_labels(profile: ModelProfile) -> list[str]:
    L = profile.num_layers
    labels = ["0: all on MEC"]
    labels += [f"{k}: after {profile.names[k - 1]}" for k in range(1, L)]
    labels += [f"{L}: all on ED"]
    return labels


def split_tradeoff_figure(profile: ModelProfile) -> go.Figure:
    """For every split point k: cycles kept on the device against bits sent over the link."""
    sp = split_points(profile)
    labels = _split_labels(profile)
    share = sp["device_cycles"] / profile.total_cycles
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=labels, y=100 * share, name="workload kept on the device (% of C)",
                marker_color=COLORS["ed"], opacity=0.75,
                hovertemplate="%{x}<br>%{y:.1f} % of the cycles on the device<extra></extra>")
    fig.add_scatter(x=labels, y=sp["bits_sent"] / 8e3, name="data sent over the link (kB)", mode="lines+markers",
                    marker=dict(size=10, color=COLORS["trans"]), line=dict(color=COLORS["trans"]),
                    hovertemplate="%{x}<br>%{y:.1f} kB to send<extra></extra>", secondary_y=True)
    fig.update_yaxes(title_text="% of the task's cycles on the device", range=[0, 105], secondary_y=False)
    fig.update_yaxes(title_text="kB sent over the link", rangemode="tozero", secondary_y=True)
    fig.update_layout(title_text="Where to cut: device workload against data to send", title_font_size=13,
                      legend=dict(orientation="h", y=-0.45), height=480, margin=dict(b=150))
    return fig


def workload_figure(cycles_per_op: float = 10.0, conv3_rule: str = "rule", device_hz: float = 1e9) -> go.Figure:
    """One bar chart of C^l for a given ξ and conv3 rule (the live widget's figure)."""
    m = paper_model(cycles_per_op, conv3_rule)
    fig = go.Figure(go.Bar(x=list(m.names), y=m.workload_cycles, marker_color=COLORS[conv3_rule],
                           hovertemplate="%{x}: %{y:.3s} cycles<extra></extra>"))
    fig.update_yaxes(type="log", exponentformat="power", title_text="C<sup>l</sup> (cycles)", range=[3, 10])
    fig.update_layout(title_text=_workload_title(m, cycles_per_op, conv3_rule, device_hz), height=420,
                      title_font_size=13)
    return fig


def _workload_title(m: ModelProfile, xi: float, rule: str, device_hz: float) -> str:
    return (f"ξ = {xi:g}, conv3 {rule}: total {m.total_cycles:.3g} cycles<br>"
            f"{m.total_cycles / device_hz:.2f} s on a {device_hz / 1e9:g} GHz device")


def workload_explorer_figure(xi_values=(1, 4, 7, 10, 15, 20), rules=("rule", "printed"),
                             xi_active: float = 10, device_hz: float = 1e9) -> go.Figure:
    """Static explorer: a slider over ξ and a menu over the conv3 rule, bars of C^l (log axis)."""
    fig = go.Figure()
    titles = []
    for rule in rules:
        row = []
        for xi in xi_values:
            m = paper_model(xi, rule)
            fig.add_bar(x=list(m.names), y=m.workload_cycles, marker_color=COLORS[rule], name=rule,
                        hovertemplate="%{x}: %{y:.3s} cycles<extra></extra>")
            row.append(_workload_title(m, xi, rule, device_hz))
        titles.append(row)
    lo = np.log10(paper_model(min(xi_values)).workload_cycles.min()) - 0.3
    hi = np.log10(paper_model(max(xi_values)).workload_cycles.max()) + 0.3
    fig.update_yaxes(type="log", exponentformat="power", title_text="C<sup>l</sup> (cycles)", range=[lo, hi])
    fig.update_layout(height=500, showlegend=False, margin=dict(t=130), title_font_size=13)
    return add_grid_controls(
        fig, [f"{x:g}" for x in xi_values], [f"conv3: {r}" for r in rules], 1, "ξ (cycles per operation)",
        slider_active=list(xi_values).index(xi_active), titles=titles, menu_xy=(1.0, 1.22),
    )


def flop_table_markdown(rows) -> str:
    """Markdown table of :func:`dcicore.torch_model.compare_with_paper` rows."""
    out = ["| layer | paper operations | torch multiply-adds | torch / paper |", "|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['layer']} | {r['paper_ops']:,.0f} | {r['torch_macs']:,.0f} | {r['ratio']:.4f} |")
    return "\n".join(out)


# ------------------------------------------------------------------ chapter 2: Eqs 1–5


def split_point_breakdown(
    config: SystemConfig,
    ed_capacity_hz: float = 1e9,
    share: float = 1.0,
    distance_m: float = 100.0,
    num_subcarriers: int | None = None,
    profile: ModelProfile | None = None,
) -> dict:
    """Delay and energy of one task split at every point k between its ED and the MEC.

    Layers 1..k run on the ED at rate r_ED = share · ``ed_capacity_hz``, the data crossing the
    cut (:func:`split_points`) goes over one subcarrier of the ED–MEC link (distance
    ``distance_m``, ``num_subcarriers`` S, default ``config.num_subcarriers``), and layers
    k+1..L run on the MEC at r_MEC = share · ``config.mec_capacity_hz``. k = L is local
    computing, k = 0 edge computing. Uses Eqs 1–5 of :mod:`dcicore.costs` (k0 on the ED,
    ``config.mec_k0`` on the MEC).

    Returns arrays over k = 0..L (s and J): ``comp_ed_s``, ``trans_s``, ``comp_mec_s``,
    ``delay_s``, ``energy_ed_j``, ``energy_trans_j``, ``energy_mec_j``, ``energy_j``, and the
    scalars ``rate_bps``, ``r_ed_hz``, ``r_mec_hz``.
    """
    profile = paper_model(config.cycles_per_op, config.conv3_rule) if profile is None else profile
    S = config.num_subcarriers if num_subcarriers is None else num_subcarriers
    sp = split_points(profile, config.return_result)
    r_ed = share * ed_capacity_hz
    r_mec = share * config.mec_capacity_hz
    gain = costs.channel_gain(distance_m, config.path_loss_exponent, config.min_distance_m)
    rate = float(costs.transmission_rate(config.bandwidth_hz, S, gain, config.tx_power_w, config.noise_w))
    comp_ed = costs.compute_delay(sp["device_cycles"], r_ed)  # Eq 1
    comp_mec = costs.compute_delay(sp["remote_cycles"], r_mec)  # Eq 1
    trans = costs.transmission_delay(sp["bits_sent"], rate)  # Eq 3
    e_ed = costs.compute_energy(config.k0, sp["device_cycles"], r_ed)  # Eq 4
    e_mec = costs.compute_energy(config.mec_k0, sp["remote_cycles"], r_mec)  # Eq 4
    e_tr = costs.transmission_energy(config.tx_power_w, sp["bits_sent"], rate)  # Eq 5
    return {
        "k": sp["k"],
        "comp_ed_s": comp_ed,
        "trans_s": trans,
        "comp_mec_s": comp_mec,
        "delay_s": comp_ed + trans + comp_mec,
        "energy_ed_j": e_ed,
        "energy_trans_j": e_tr,
        "energy_mec_j": e_mec,
        "energy_j": e_ed + e_tr + e_mec,
        "rate_bps": rate,
        "r_ed_hz": r_ed,
        "r_mec_hz": r_mec,
    }


_PARTS = (
    ("comp_ed_s", "energy_ed_j", "compute on the ED", COLORS["ed"]),
    ("trans_s", "energy_trans_j", "transmission", COLORS["trans"]),
    ("comp_mec_s", "energy_mec_j", "compute on the MEC", COLORS["mec"]),
    ("delay_s", "energy_j", "total", COLORS["total"]),
)


def _add_breakdown_traces(fig, b, labels):
    """8 traces: (ED, transmission, MEC, total) delays in col 1, then the same energies in col 2."""
    for col, key_idx, unit in ((1, 0, "s"), (2, 1, "J")):
        for part in _PARTS:
            key, name, color = part[key_idx], part[2], part[3]
            y = np.where(b[key] > 0, b[key], np.nan)
            total = key in ("delay_s", "energy_j")
            fig.add_scatter(
                x=labels, y=y, name=name, legendgroup=name, showlegend=col == 1,
                mode="lines+markers", line=dict(color=color, width=3 if total else 1.5, dash=None if total else "dot"),
                marker=dict(size=8 if total else 5, color=color),
                hovertemplate=f"%{{x}}<br>{name}: %{{y:.3g}} {unit}<extra></extra>", row=1, col=col,
            )


def _breakdown_layout(fig, deadline_s):
    fig.add_hline(y=deadline_s, line_dash="dash", line_color="red", row=1, col=1,
                  annotation_text=f"deadline T = {deadline_s:g} s", annotation_position="bottom right")
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_yaxes(title_text="delay (s)", row=1, col=1)
    fig.update_yaxes(title_text="energy (J)", row=1, col=2)
    fig.update_xaxes(title_text="split point k (layers 1..k on the ED)", tickangle=-40)
    fig.update_layout(height=600, legend=dict(orientation="h", y=-0.5, x=0), margin=dict(b=220, t=120),
                      title=dict(font_size=13))


def _breakdown_title(b, share, distance_m, ed_capacity_hz, S):
    return (f"share {100 * share:.0f} %: ED at {b['r_ed_hz'] / 1e9:.3g} GHz (of {ed_capacity_hz / 1e9:.3g}), "
            f"MEC at {b['r_mec_hz'] / 1e9:.3g} GHz<br>d = {distance_m:g} m, S = {S}: "
            f"{b['rate_bps'] / 1e6:.1f} Mbit/s per subcarrier")


def split_delay_energy_figure(config: SystemConfig, ed_capacity_hz=1e9, share=1.0, distance_m=100.0,
                              num_subcarriers=None) -> go.Figure:
    """Delay and energy against the split point for one setting (the live widget's figure)."""
    S = config.num_subcarriers if num_subcarriers is None else num_subcarriers
    b = split_point_breakdown(config, ed_capacity_hz, share, distance_m, S)
    labels = _split_labels(paper_model(config.cycles_per_op, config.conv3_rule))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("delay (Eqs 1 and 3)", "energy (Eqs 4 and 5)"))
    _add_breakdown_traces(fig, b, labels)
    _breakdown_layout(fig, config.deadline_s)
    fig.update_layout(title_text=_breakdown_title(b, share, distance_m, ed_capacity_hz, S))
    return fig


def split_explorer_figure(config: SystemConfig, shares=(0.1, 0.25, 0.5, 0.75, 1.0),
                          distances_m=(25, 100, 175, 250), ed_capacity_hz=1e9,
                          share_active=1.0, distance_active=100) -> go.Figure:
    """Static explorer of :func:`split_point_breakdown`: slider = share, menu = ED–MEC distance."""
    labels = _split_labels(paper_model(config.cycles_per_op, config.conv3_rule))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("delay (Eqs 1 and 3)", "energy (Eqs 4 and 5)"))
    titles = []
    lo_hi = {"delay_s": [np.inf, -np.inf], "energy_j": [np.inf, -np.inf]}
    for d in distances_m:
        row = []
        for s in shares:
            b = split_point_breakdown(config, ed_capacity_hz, s, d)
            for key, (lo_key, hi_key) in (("delay_s", ("trans_s", "delay_s")), ("energy_j", ("energy_trans_j", "energy_j"))):
                parts = np.concatenate([b[k][b[k] > 0] for k in (lo_key, hi_key)])
                lo_hi[key] = [min(lo_hi[key][0], parts.min()), max(lo_hi[key][1], parts.max())]
            # every cell carries legend entries; hidden traces stay out of the legend
            _add_breakdown_traces(fig, b, labels)
            row.append(_breakdown_title(b, s, d, ed_capacity_hz, config.num_subcarriers))
        titles.append(row)
    _breakdown_layout(fig, config.deadline_s)
    # a fixed y range per panel, so that moving the slider moves the curves, not the axes
    for col, key in ((1, "delay_s"), (2, "energy_j")):
        lo, hi = lo_hi[key]
        if key == "delay_s":
            hi = max(hi, config.deadline_s)
        fig.update_yaxes(range=[np.log10(lo) - 0.2, np.log10(hi) + 0.2], row=1, col=col)
    return add_grid_controls(
        fig, [f"{100 * s:.0f} %" for s in shares], [f"d = {d:g} m" for d in distances_m], 8, "share",
        slider_active=list(shares).index(share_active),
        menu_active=list(distances_m).index(distance_active), titles=titles, menu_xy=(1.0, 1.32),
        slider_y=-0.72,
    )


def cost_optimal_rate_hz(w_energy: float, w_delay: float, k0: float) -> float:
    """The rate minimising ω_e·E^Comp + ω_d·T^Comp of any block (Eqs 1, 4, 6), in Hz.

    d/dr [ω_e k0 C r² + ω_d C / r] = 0 gives r* = (ω_d / (2 ω_e k0))^(1/3), whatever C is.
    """
    from dcicore.costs import cost_optimal_rate

    return float(cost_optimal_rate(w_energy, w_delay, k0))


def rate_cost_curve(config: SystemConfig, workload_cycles: float, rates_hz) -> dict:
    """Energy (Eq 4), delay (Eq 1) and their weighted cost (Eq 6) of one block at each rate."""
    r = np.asarray(rates_hz, dtype=np.float64)
    e = costs.compute_energy(config.k0, workload_cycles, r)
    d = costs.compute_delay(workload_cycles, r)
    return {"rate_hz": r, "energy_j": e, "delay_s": d,
            "cost": costs.system_cost(e, d, config.w_energy, config.w_delay)}


def rate_cost_figure(config: SystemConfig, workload_cycles: float, rates_hz, deadline_rate_hz=None,
                     title: str = "") -> go.Figure:
    """Energy, delay and weighted cost of one block against its rate r (log–log), with r* marked
    and, if given, the slowest rate that meets the deadline (rates left of it are shaded)."""
    c = rate_cost_curve(config, workload_cycles, rates_hz)
    x = c["rate_hz"] / 1e9
    we, wd = config.w_energy * c["energy_j"], config.w_delay * c["delay_s"]
    y_lo, y_hi = float(min(we.min(), wd.min())), float(c["cost"].max())
    fig = go.Figure()

    def band(x0, x1, color, name):
        fig.add_scatter(x=[x0, x0, x1, x1, x0], y=[y_lo, y_hi, y_hi, y_lo, y_lo], fill="toself", mode="lines",
                        line_width=0, fillcolor=color, name=name, hoverinfo="skip")

    def vline(xv, color, name, dash):
        fig.add_scatter(x=[xv, xv], y=[y_lo, y_hi], mode="lines", line=dict(color=color, dash=dash), name=name,
                        hovertemplate=f"{name}: %{{x:.3g}} GHz<extra></extra>")

    band(config.ed_capacity_min_hz / 1e9, config.ed_capacity_max_hz / 1e9, "rgba(127,127,127,0.15)",
         "range of ED capacities")
    if deadline_rate_hz is not None:
        band(float(x.min()), deadline_rate_hz / 1e9, "rgba(214,39,40,0.10)", "too slow for the deadline")
        vline(deadline_rate_hz / 1e9, "#d62728", "slowest rate meeting the deadline", "dash")
    vline(config.mec_capacity_hz / 1e9, "#7f7f7f", "MEC at 100 %", "dot")
    fig.add_scatter(x=x, y=we, name="ω<sub>e</sub>·energy (Eq 4)", line=dict(color=COLORS["mec"], dash="dot"),
                    hovertemplate="%{x:.3g} GHz: %{y:.3g}<extra></extra>")
    fig.add_scatter(x=x, y=wd, name="ω<sub>d</sub>·delay (Eq 1)", line=dict(color=COLORS["ed"], dash="dot"),
                    hovertemplate="%{x:.3g} GHz: %{y:.3g}<extra></extra>")
    fig.add_scatter(x=x, y=c["cost"], name="weighted cost", line=dict(color=COLORS["total"], width=3),
                    hovertemplate="%{x:.3g} GHz: cost %{y:.3g}<extra></extra>")
    r_star = cost_optimal_rate_hz(config.w_energy, config.w_delay, config.k0)
    best = rate_cost_curve(config, workload_cycles, [r_star])
    fig.add_scatter(x=[r_star / 1e9], y=best["cost"], mode="markers", name="r* (cost minimum)",
                    marker=dict(size=14, symbol="star", color="black"),
                    hovertemplate="r* = %{x:.3g} GHz, cost %{y:.3g}<extra></extra>")
    fig.update_xaxes(type="log", title_text="rate r (GHz)")
    fig.update_yaxes(type="log", exponentformat="power", title_text="cost units (J and s, weighted)")
    fig.update_layout(title_text=title, title_font_size=13, height=540, legend=dict(orientation="h", y=-0.25),
                      margin=dict(b=170))
    return fig


# ------------------------------------------------------------------ chapter 5: the MDP


def state_graph(obs: dict, config: SystemConfig) -> dict:
    """The graph state of one observation of :class:`~dcicore.env.DCIEnv`, laid out for drawing.

    Only task rows that hold a task (``task_location >= 0``) are drawn. Compute nodes (V_α) sit
    in a band at the top, at their positions in the area; task layers (V_β) form a grid below,
    one row per task, one column per layer.

    Returns a dict of: ``alpha`` (list of dicts x, y, label, free, capacity, is_mec);
    ``beta`` (list of dicts x, y, row, layer, status, label); ``links`` (E_α, list of (i, j, w));
    ``order`` (E_β, pairs of beta indices); ``assign`` (E_αβ, pairs (alpha index, beta index)).
    """
    L = config.num_layers
    nf = np.asarray(obs["node_features"])
    n1 = nf.shape[0]
    width = L - 1
    alpha = []
    for n in range(n1):
        alpha.append(dict(
            x=float(nf[n, 4]) * width, y=1.5 + 4.0 * float(nf[n, 5]),
            label="MEC" if n == 0 else f"ED {n}", free=float(nf[n, 1]),
            capacity=float(nf[n, 0]) * config.mec_capacity_hz, is_mec=bool(nf[n, 3] > 0.5),
        ))
    links = []
    nl = np.asarray(obs["node_links"])
    for i in range(n1):
        for j in range(i + 1, n1):
            if nl[i, j] > 0:
                links.append((i, j, float(nl[i, j])))
    tf = np.asarray(obs["task_features"]).reshape(-1, L, 8)
    rows = np.flatnonzero(np.asarray(obs["task_location"]) >= 0)
    assignment = np.asarray(obs["assignment"]).reshape(-1, L)
    K = config.max_tasks_per_device
    beta, order, assign = [], [], []
    for pos, r in enumerate(rows):
        for layer in range(L):
            f = tf[r, layer]
            status = "done" if f[2] > 0.5 else "running" if f[3] > 0.5 else "next" if f[5] > 0.5 else "pending"
            idx = len(beta)
            beta.append(dict(x=float(layer), y=-float(pos), row=int(r), layer=layer, status=status,
                             label=f"task row {r} (ED {r // K + 1}), layer {layer + 1} {LAYER_NAMES[layer]}: {status}",
                             ready=bool(f[7] > 0.5)))
            if layer > 0:
                order.append((idx - 1, idx))
            node = int(assignment[r, layer])
            if node >= 0:
                assign.append((node, idx))
    return {"alpha": alpha, "beta": beta, "links": links, "order": order, "assign": assign,
            "rows": rows.tolist()}


_STATUS_COLORS = {"done": "#2ca02c", "running": "#ff7f0e", "next": "#1f77b4", "pending": "#c7c7c7"}


def _segments(pairs, xa, ya, xb, yb):
    xs, ys = [], []
    for a, b in pairs:
        xs += [xa[a], xb[b], None]
        ys += [ya[a], yb[b], None]
    return xs, ys


def _graph_traces(g: dict) -> list:
    """Six traces: E_α links, E_β order, E_αβ assignment, V_β nodes, V_α nodes, link hovers."""
    ax = [a["x"] for a in g["alpha"]]
    ay = [a["y"] for a in g["alpha"]]
    bx = [b["x"] for b in g["beta"]]
    by = [b["y"] for b in g["beta"]]
    lx, ly = _segments([(i, j) for i, j, _ in g["links"]], ax, ay, ax, ay)
    ox, oy = _segments(g["order"], bx, by, bx, by)
    sx, sy = _segments(g["assign"], ax, ay, bx, by)
    traces = [
        go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="#7f7f7f", width=2), name="E<sub>α</sub>: links",
                   hoverinfo="skip"),
        go.Scatter(x=ox, y=oy, mode="lines", line=dict(color="#bbbbbb", width=2), name="E<sub>β</sub>: layer order",
                   hoverinfo="skip"),
        go.Scatter(x=sx, y=sy, mode="lines", line=dict(color="#9467bd", width=1.2, dash="dot"),
                   name="E<sub>αβ</sub>: assignment", hoverinfo="skip", opacity=0.8),
        go.Scatter(x=bx, y=by, mode="markers", name="V<sub>β</sub>: task layers",
                   marker=dict(size=16, symbol="square", color=[_STATUS_COLORS[b["status"]] for b in g["beta"]],
                               line=dict(width=[3 if b["ready"] else 0.5 for b in g["beta"]], color="black")),
                   text=[b["label"] for b in g["beta"]], hovertemplate="%{text}<extra></extra>"),
        go.Scatter(x=ax, y=ay, mode="markers+text", name="V<sub>α</sub>: compute nodes",
                   text=[a["label"] for a in g["alpha"]], textposition="top center",
                   marker=dict(size=[30 if a["is_mec"] else 12 + 14 * a["capacity"] / 1e9 for a in g["alpha"]],
                               color=[a["free"] for a in g["alpha"]], colorscale="Blues", cmin=0, cmax=1,
                               line=dict(width=1, color="black"),
                               colorbar=dict(title="free share", len=0.35, y=0.8, thickness=12)),
                   customdata=[[a["capacity"] / 1e9, 100 * a["free"]] for a in g["alpha"]],
                   hovertemplate="%{text}: %{customdata[0]:.2f} GHz, %{customdata[1]:.0f} % free<extra></extra>"),
        go.Scatter(x=[(ax[i] + ax[j]) / 2 for i, j, _ in g["links"]], y=[(ay[i] + ay[j]) / 2 for i, j, _ in g["links"]],
                   mode="markers", marker=dict(size=6, color="#7f7f7f"), showlegend=False,
                   text=[f"link {g['alpha'][i]['label']}–{g['alpha'][j]['label']}: "
                         f"log2(1+SNR) = {32 * w:.1f} bit/s/Hz" for i, j, w in g["links"]],
                   hovertemplate="%{text}<extra></extra>"),
    ]
    return traces


def state_graph_figure(observations, config: SystemConfig, labels=None, active: int = -1) -> go.Figure:
    """Draw graph states (one per observation) with a slider over them (static-page friendly).

    ``active`` is the observation shown first (default: the last one)."""
    obs_list = list(observations)
    labels = labels if labels is not None else [f"slot {t}" for t in range(len(obs_list))]
    fig = go.Figure()
    max_rows = 1
    for obs in obs_list:
        g = state_graph(obs, config)
        max_rows = max(max_rows, len(g["rows"]))
        for tr in _graph_traces(g):
            fig.add_trace(tr)
    for status, color in _STATUS_COLORS.items():  # a legend for the layer colours
        fig.add_scatter(x=[None], y=[None], mode="markers", name=f"layer {status}",
                        marker=dict(size=12, symbol="square", color=color))
    n_extra = len(_STATUS_COLORS)
    # the legend traces come last; move them first so that add_visibility_slider keeps them on
    fig.data = fig.data[-n_extra:] + fig.data[:-n_extra]
    add_visibility_slider(fig, labels, 6, "observation", active=active % len(obs_list), always_visible=n_extra)
    fig.update_xaxes(visible=False, range=[-1.2, config.num_layers - 0.2])
    fig.update_yaxes(visible=False, range=[-max_rows + 0.5, 6.2])
    fig.update_layout(height=560 + 40 * max_rows, title_text="The graph state S = (V<sub>α</sub>, V<sub>β</sub>, "
                      "E<sub>α</sub>, E<sub>β</sub>, E<sub>αβ</sub>)", title_font_size=13,
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0), plot_bgcolor="white",
                      margin=dict(l=10, r=10, t=130))
    return fig


def masks_figure(masks: dict, config: SystemConfig) -> go.Figure:
    """Heatmaps of the node and block masks of the ready task rows, and free share levels per node."""
    ready = np.flatnonzero(masks["ready"])
    K = config.max_tasks_per_device
    rows = [f"row {r} (ED {r // K + 1})" for r in ready]
    nodes = ["MEC"] + [f"ED {n}" for n in range(1, config.num_nodes)]
    fig = make_subplots(rows=1, cols=3, column_widths=[0.38, 0.38, 0.24], horizontal_spacing=0.1,
                        subplot_titles=("D: node", "U: block end", "R: free levels"))
    scale = [[0, "#f2f2f2"], [1, "#1f77b4"]]
    fig.add_heatmap(z=masks["node"][ready].astype(int), x=nodes, y=rows, colorscale=scale, showscale=False,
                    zmin=0, zmax=1, xgap=2, ygap=2, row=1, col=1,
                    hovertemplate="%{y} → %{x}: %{z}<extra></extra>")
    fig.add_heatmap(z=masks["block"][ready].astype(int), x=[f"{l + 1} {n}" for l, n in enumerate(LAYER_NAMES)],
                    y=rows, colorscale=scale, showscale=False, zmin=0, zmax=1, xgap=2, ygap=2, row=1, col=2,
                    hovertemplate="%{y}, block ends at %{x}: %{z}<extra></extra>")
    fig.add_bar(x=nodes, y=masks["max_level"], marker_color="#1f77b4", row=1, col=3,
                hovertemplate="%{x}: %{y} of " + str(config.share_levels) + " levels free<extra></extra>")
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=2)
    fig.update_yaxes(range=[0, config.share_levels], row=1, col=3)
    fig.update_xaxes(tickangle=-45)
    fig.update_layout(height=300 + 22 * len(ready), showlegend=False, margin=dict(t=60))
    return fig


def penalty_ranking_figure(results: dict, penalties, active_penalty=None) -> go.Figure:
    """System cost (= −return, Eq 13) of each policy, with a slider over the penalty P.

    ``results[P][policy]`` is the dict :func:`dcicore.baselines.evaluate` returns.
    """
    penalties = list(penalties)
    policies = list(results[penalties[0]])
    fig = go.Figure()
    titles = []
    for P in penalties:
        costs_p = [results[P][p]["system_cost"] for p in policies]
        order = np.argsort(costs_p, kind="stable")
        ranking = " < ".join(policies[i] for i in order)
        fig.add_bar(x=policies, y=costs_p, marker_color=[POLICY_COLORS.get(p, "grey") for p in policies],
                    text=[f"{c:.0f}" for c in costs_p], textposition="outside",
                    customdata=[[100 * results[P][p]["completion_rate"]] for p in policies],
                    hovertemplate="%{x}: cost %{y:.1f} per episode, %{customdata[0]:.0f} % completed<extra></extra>")
        titles.append(f"P = {P:g}: cheapest first {ranking}")
    fig.update_yaxes(title_text="system cost per episode (= −return)", rangemode="tozero")
    fig.update_layout(height=440, showlegend=False, title_font_size=13)
    active = penalties.index(active_penalty) if active_penalty in penalties else 0
    return add_visibility_slider(fig, [f"{P:g}" for P in penalties], 1, "penalty P", active=active, titles=titles)


def with_penalty(config: SystemConfig, penalty: float) -> SystemConfig:
    """``config`` with another failure penalty P (``dataclasses.replace``)."""
    return replace(config, penalty=float(penalty))
