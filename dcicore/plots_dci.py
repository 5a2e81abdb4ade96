"""Plotly figures of the chapters "System cost and the optimisation problem" and "The DCI
system in time".

Every builder takes data that :mod:`dcicore.experiments` (or :mod:`dcicore.exact`) computed and
returns a ``plotly.graph_objects.Figure``; none of them runs a simulation. Figures that must stay
explorable on the static book pages carry their own sliders, drop-down menus or buttons over
precomputed values (they work without a kernel). Labels use Unicode and HTML tags, never LaTeX
(see :mod:`dcicore.plots`).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcicore.costs import system_cost
from dcicore.experiments import pareto_mask, pivot

__all__ = [
    "POLICY_COLORS",
    "node_label",
    "weight_slider_figure",
    "cost_grid",
    "tradeoff_figure",
    "solve_time_figure",
    "exact_comparison_figure",
    "html_table",
    "decision_space_figure",
    "scenario_map_figure",
    "free_share_figure",
    "free_share_slots_figure",
    "baselines_figure",
    "policy_bars_figure",
]

#: one colour per scheme, the same in every chapter
POLICY_COLORS = {
    "LC": "#d62728",
    "EC": "#1f77b4",
    "Random": "#7f7f7f",
    "Greedy": "#2ca02c",
    "Exact": "#9467bd",
    "CERL": "#ff7f0e",
    "D2QN": "#8c564b",
    "DDQN": "#e377c2",
}


def node_label(n: int) -> str:
    """``"MEC"`` for node 0, ``"ED n"`` otherwise."""
    return "MEC" if int(n) == 0 else f"ED {int(n)}"


# ------------------------------------------------------------------------------ chapter 3
def cost_grid(plans: dict, w_energy: float, w_delay: float):
    """Least Eq 6 cost of one task per (node, split) over the shares, deadline-feasible only.

    Returns ``(rows, splits, grid)``: ``rows`` the node of each grid row (the source first: its
    only plan is all-local, split = L; then the helper nodes in index order), ``splits`` 0..L
    and ``grid`` (len(rows), L+1) with NaN where no plan exists or none meets the deadline.
    """
    source = int(plans["source"])
    nodes = [source] + sorted(set(int(n) for n in np.unique(plans["node"])) - {source})
    L = int(plans["split"].max())
    cost = system_cost(plans["energy_j"], plans["delay_s"], w_energy, w_delay)
    cost = np.where(plans["feasible"], cost, np.inf)
    row_of = {n: i for i, n in enumerate(nodes)}
    ridx = np.array([row_of[int(n)] for n in plans["node"]])
    grid = np.full((len(nodes), L + 1), np.inf)
    np.minimum.at(grid, (ridx, plans["split"]), cost)
    grid[~np.isfinite(grid)] = np.nan
    return nodes, np.arange(L + 1), grid


def weight_slider_figure(plans: dict, weights, title: str = "", zmax: float = 1.2) -> go.Figure:
    """Heat map of the best cost per (split point, node) with a slider over ω_e (ω_d = 1 − ω_e).

    Colour = cost relative to the best plan at that weight (1 = best, capped at ``zmax``); the star
    marks the best (split, node). Cells are blank where no share meets the deadline.
    """
    weights = [float(w) for w in weights]
    frames = []
    for we in weights:
        nodes, splits, grid = cost_grid(plans, we, 1.0 - we)
        best = np.nanmin(grid)
        r, s = np.unravel_index(np.nanargmin(grid), grid.shape)
        frames.append((grid, best, int(r), int(s)))
    L = int(splits[-1])
    labels = [node_label(n) + (" (source)" if i == 0 else "") for i, n in enumerate(nodes)]
    text0 = _cell_text(frames[0][0])
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=frames[0][0] / frames[0][1], x=list(splits), y=labels, zmin=1.0, zmax=zmax,
        colorscale="Viridis_r", text=text0, texttemplate="%{text}",
        colorbar=dict(title=f"cost / best<br>(capped at {zmax:g})"),
        hovertemplate="split after layer %{x}<br>%{y}<br>cost %{text}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=[int(splits[frames[0][3]])], y=[labels[frames[0][2]]], mode="markers",
        marker=dict(symbol="star", size=22, color="white", line=dict(color="black", width=2)),
        name="best plan", hoverinfo="skip",
    ))
    steps = []
    for we, (grid, best, r, s) in zip(weights, frames):
        steps.append(dict(
            method="update", label=f"{we:.2f}",
            args=[{"z": [grid / best, None], "text": [_cell_text(grid), None],
                   "x": [list(splits), [int(splits[s])]], "y": [labels, [labels[r]]]},
                  {"title.text": _weight_title(title, we, best, int(splits[s]), nodes[r], L)}],
        ))
    start = int(np.argmin(np.abs(np.array(weights) - 0.8)))
    grid, best, r, s = frames[start]
    fig.data[0].z = grid / best
    fig.data[0].text = _cell_text(grid)
    fig.data[1].x, fig.data[1].y = [int(splits[s])], [labels[r]]
    fig.update_layout(
        title=_weight_title(title, weights[start], best, int(splits[s]), nodes[r], L),
        xaxis=dict(title="split point: layers run on the source before the data moves",
                   dtick=1),
        yaxis=dict(title="node that runs the rest", autorange="reversed"),
        sliders=[dict(active=start, steps=steps, currentvalue=dict(prefix="ω<sub>e</sub> = "),
                      pad=dict(t=50))] if len(steps) > 1 else [],
        height=max(380, 60 + 38 * len(labels)), showlegend=False,
    )
    return fig


def _cell_text(grid):
    return [["" if not np.isfinite(v) else f"{v:.3g}" for v in row] for row in grid]


def _weight_title(title, we, best, split, node, num_layers):
    where = "all layers on the source" if split == num_layers else (
        f"{split} layer(s) on the source, the rest on {node_label(node)}")
    head = f"{title}<br>" if title else ""
    return (f"{head}ω<sub>e</sub> = {we:.2f}, ω<sub>d</sub> = {1 - we:.2f}: best cost {best:.3g} "
            f"({where})")


def tradeoff_figure(plans: dict, front: dict | None = None, marks: dict | None = None,
                    title: str = "") -> go.Figure:
    """Energy against delay of every plan in ``plans`` (log–log), coloured by split point.

    ``front``: dict with ``delay_s``/``energy_j`` of the Pareto front (drawn as a line; default:
    the front of ``plans``). ``marks``: {label: plan dict from best_plan} drawn as stars. Plans
    beyond the deadline are drawn faded; the deadline is a dashed vertical line.
    """
    d, e = plans["delay_s"], plans["energy_j"]
    feas = plans["feasible"]
    if front is None:
        m = pareto_mask(d[feas], e[feas])
        front = {"delay_s": d[feas][m], "energy_j": e[feas][m]}
    source = int(plans["source"])
    kind = np.where(plans["node"] == source, "all local",
                    np.where(plans["node"] == 0, "to the MEC", "to another ED"))
    symbols = {"all local": "circle", "to the MEC": "diamond", "to another ED": "triangle-up"}
    fig = go.Figure()
    L = int(plans["split"].max())
    for k in symbols:
        for ok, op in ((True, 0.85), (False, 0.15)):
            sel = (kind == k) & (feas == ok)
            if not sel.any():
                continue
            custom = np.stack([plans["split"][sel], plans["node"][sel], plans["share_local"][sel],
                               plans["share_remote"][sel]], axis=1)
            fig.add_trace(go.Scatter(
                x=d[sel], y=e[sel], mode="markers", opacity=op,
                name=f"{k}{'' if ok else ' (misses T)'}", legendgroup=k,
                marker=dict(symbol=symbols[k], size=7, color=plans["split"][sel], cmin=0, cmax=L,
                            colorscale="Turbo", showscale=(k == "to the MEC" and ok),
                            colorbar=dict(title="split", x=1.02, len=0.6, y=0.3)),
                customdata=custom,
                hovertemplate=("delay %{x:.3g} s<br>energy %{y:.3g} J<br>split %{customdata[0]}"
                               "<br>node %{customdata[1]}<br>share local %{customdata[2]:.2f}"
                               "<br>share remote %{customdata[3]:.2f}<extra></extra>"),
            ))
    order = np.argsort(front["delay_s"])
    fig.add_trace(go.Scatter(x=np.asarray(front["delay_s"])[order],
                             y=np.asarray(front["energy_j"])[order], mode="lines",
                             line=dict(color="black", width=2), name="Pareto front"))
    for label, p in (marks or {}).items():
        fig.add_trace(go.Scatter(
            x=[p["delay_s"]], y=[p["energy_j"]], mode="markers+text", text=[label],
            textposition="top right", name=label,
            marker=dict(symbol="star", size=16, color="gold", line=dict(color="black", width=1)),
        ))
    fig.add_vline(x=float(plans["deadline_s"]), line_dash="dash", line_color="grey",
                  annotation_text="deadline T", annotation_position="top left")
    fig.update_layout(
        title=title, xaxis=dict(title="delay (s)", type="log"),
        yaxis=dict(title="energy (J)", type="log"), height=540,
        legend=dict(orientation="h", y=-0.18),
    )
    return fig


def solve_time_figure(rows, title: str = "") -> go.Figure:
    """Measured solve time of the exact MILP against its size, log–log.

    ``rows`` from :func:`dcicore.exact.solve_time_table`: x = binary variables of the MILP,
    y = wall-clock seconds; each point is labelled with its instance (N EDs, Q tasks), and the
    points of one N are joined.
    """
    fig = go.Figure()
    for n in sorted({r["num_devices"] for r in rows}):
        sub = sorted((r for r in rows if r["num_devices"] == n), key=lambda r: r["num_tasks"])
        fig.add_trace(go.Scatter(
            x=[r["num_variables"] for r in sub], y=[r["solve_s"] for r in sub],
            mode="lines+markers+text", name=f"N = {n}",
            text=[f"{r['num_tasks']} task{'s' if r['num_tasks'] > 1 else ''}" for r in sub],
            textposition="top left",
            customdata=[[r["num_tasks"], r["num_constraints"], r["status"]] for r in sub],
            hovertemplate=("%{customdata[0]} tasks: %{x} binaries, %{customdata[1]} rows, "
                           "%{y:.3g} s (%{customdata[2]})<extra></extra>"),
        ))
    fig.update_layout(title=title, height=440,
                      xaxis=dict(title="binary variables of the MILP", type="log"),
                      yaxis=dict(title="solve time (s)", type="log"))
    return fig


def exact_comparison_figure(rows, title: str = "") -> go.Figure:
    """Cost of Exact, Greedy and LC on each small instance (rows of ``solve_time_table``)."""
    labels = [f"N={r['num_devices']}, {r['num_tasks']} task{'s' if r['num_tasks'] > 1 else ''}"
              for r in rows]
    fig = go.Figure()
    for key, name in (("exact_cost", "Exact"), ("greedy_cost", "Greedy"), ("lc_cost", "LC")):
        fig.add_trace(go.Bar(x=labels, y=[r[key] for r in rows], name=name,
                             marker_color=POLICY_COLORS[name],
                             hovertemplate=f"{name}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(title=title, barmode="group", height=420,
                      yaxis=dict(title="system cost (Eq 6 + penalties)", type="log"),
                      legend=dict(orientation="h", y=1.1))
    return fig


def html_table(rows, columns: dict):
    """An ``IPython.display.HTML`` table of ``rows`` (dicts); ``columns`` maps a key to its
    header. Floats are shown with 3 significant digits. It renders the same in JupyterLab and in
    the book (myst-nb renders Markdown outputs as CommonMark, which has no tables)."""
    from html import escape

    from IPython.display import HTML

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    head = "".join(f"<th>{escape(h)}</th>" for h in columns.values())
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(r[k]))}</td>" for k in columns) + "</tr>"
                   for r in rows)
    return HTML(f'<table class="table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def decision_space_figure(rows) -> go.Figure:
    """log10 of the joint actions per slot and per episode against N (rows from decision_space)."""
    n = [r["num_devices"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=n, y=[r["log10_per_slot"] for r in rows], mode="lines+markers",
                             name="one slot"))
    fig.add_trace(go.Scatter(x=n, y=[r["log10_per_episode"] for r in rows], mode="lines+markers",
                             name="one episode"))
    fig.update_layout(xaxis=dict(title="number of EDs N"),
                      yaxis=dict(title="log<sub>10</sub> of the number of joint decisions",
                                 type="log"), height=380)
    return fig


# ------------------------------------------------------------------------------ chapter 4
def scenario_map_figure(positions_m, link, capacity_hz, config: dict, title: str = "") -> go.Figure:
    """Map of one scenario: the MEC (centre) with its range, EDs coloured by capacity, D2D links.

    EDs that cannot reach the MEC are drawn as crosses.
    """
    pos = np.asarray(positions_m)
    link = np.asarray(link, dtype=bool)
    cap = np.asarray(capacity_hz) / 1e9
    n1 = pos.shape[0]
    xs, ys = [], []
    for a in range(1, n1):
        for b in range(a + 1, n1):
            if link[a, b]:
                xs += [pos[a, 0], pos[b, 0], None]
                ys += [pos[a, 1], pos[b, 1], None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="lightgrey", width=1),
                             name="ED–ED link", hoverinfo="skip"))
    reach = link[1:, 0]
    for ok, sym, name in ((True, "circle", "ED in MEC range"), (False, "x", "ED out of MEC range")):
        sel = np.flatnonzero(reach == ok) + 1
        if sel.size == 0:
            continue
        fig.add_trace(go.Scatter(
            x=pos[sel, 0], y=pos[sel, 1], mode="markers+text", name=name,
            text=[str(i) for i in sel], textposition="top center",
            marker=dict(symbol=sym, size=13, color=cap[sel], colorscale="Blues",
                        cmin=config["ed_capacity_min_hz"] / 1e9,
                        cmax=config["ed_capacity_max_hz"] / 1e9, showscale=ok,
                        line=dict(color="black", width=1),
                        colorbar=dict(title="GHz", tickformat=".1f")),
            customdata=cap[sel], hovertemplate="ED %{text}: %{customdata:.2f} GHz<extra></extra>",
        ))
    fig.add_trace(go.Scatter(x=[pos[0, 0]], y=[pos[0, 1]], mode="markers", name="MEC server",
                             marker=dict(symbol="square", size=18, color="black")))
    r = config["mec_range_m"]
    cx, cy = pos[0]
    fig.add_shape(type="circle", x0=cx - r, y0=cy - r, x1=cx + r, y1=cy + r,
                  line=dict(color="black", dash="dot"))
    a = config["area_m"]
    pad = 0.05 * a
    fig.update_layout(title=title, height=600,
                      xaxis=dict(title="x (m)", range=[-pad, a + pad], constrain="domain"),
                      yaxis=dict(title="y (m)", range=[-pad, a + pad], scaleanchor="x",
                                 scaleratio=1),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def free_share_figure(trace: dict, title: str = "") -> go.Figure:
    """Heat map node × slot of the free share before and after each slot's decisions.

    A drop-down menu switches between "before", "after" and "taken by new stages" (the
    difference). This is the data of the paper's Fig 5, for every slot of one episode.
    """
    before = np.asarray(trace["free_before"]).T * 100  # (N+1, T) in %
    after = np.asarray(trace["free_after"]).T * 100
    taken = before - after
    labels = [node_label(n) for n in range(before.shape[0])]
    slots = list(range(1, before.shape[1] + 1))
    views = [("free before the slot's decisions (%)", before),
             ("free after the slot's decisions (%)", after),
             ("taken by stages started in the slot (%)", taken)]
    fig = go.Figure(go.Heatmap(z=views[0][1], x=slots, y=labels, zmin=0, zmax=100,
                               colorscale="YlGnBu", colorbar=dict(title="%"),
                               hovertemplate="slot %{x}, %{y}: %{z:.0f} %<extra></extra>"))
    def head(name):
        return f"{title}<br><sup>{name}</sup>" if title else name

    buttons = [dict(method="update", label=name, args=[{"z": [z]}, {"title.text": head(name)}])
               for name, z in views]
    fig.update_layout(
        title=dict(text=head(views[0][0]), x=0.0, xanchor="left"),
        height=max(420, 22 * len(labels) + 180),
        xaxis=dict(title="slot"), yaxis=dict(title="node", autorange="reversed"),
        updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.02,
                          yanchor="bottom")],
        margin=dict(t=130),
    )
    return fig


def free_share_slots_figure(trace: dict, title: str = "") -> go.Figure:
    """Bars of the free share per node before and after one slot, with a slider over slots
    (the layout of the paper's Fig 5)."""
    before = np.asarray(trace["free_before"]) * 100  # (T, N+1)
    after = np.asarray(trace["free_after"]) * 100
    labels = [node_label(n) for n in range(before.shape[1])]
    fig = go.Figure([
        go.Bar(x=labels, y=before[0], name="before", marker_color="#9ecae1"),
        go.Bar(x=labels, y=after[0], name="after", marker_color="#08519c"),
    ])
    steps = [dict(method="update", label=str(t + 1), args=[{"y": [before[t], after[t]]}])
             for t in range(before.shape[0])]
    fig.update_layout(
        title=title, barmode="group", height=460,
        yaxis=dict(title="remaining share of capacity (%)", range=[0, 100]),
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="slot "), pad=dict(t=60))],
        legend=dict(orientation="h", y=1.08),
    )
    return fig


def baselines_figure(rows, title: str = "", slider_key: str | None = None,
                     slider_label: str = "λ = ", slider_unit: str = " tasks/s") -> go.Figure:
    """System cost per episode and completion rate against N, one line per scheme.

    ``rows`` from :func:`dcicore.experiments.sweep_baselines`. With ``slider_key`` (e.g.
    ``"arrival_rate_hz"``) the rows may hold several values of that field and a slider picks
    one (static pages can explore them); otherwise the cost carries ± one standard deviation
    over episodes.
    """
    values = [None]
    if slider_key is not None:
        values = sorted({r[slider_key] for r in rows})
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=("system cost per episode", "task completion rate"))
    groups = []
    for v in values:
        sub = [r for r in rows if slider_key is None or r[slider_key] == v]
        ns, pols, cost = pivot(sub, "system_cost")
        _, _, std = pivot(sub, "system_cost_std")
        _, _, comp = pivot(sub, "completion_rate")
        idx = []
        for j, p in enumerate(pols):
            color = POLICY_COLORS.get(p)
            err = None if slider_key is not None else dict(type="data", array=std[:, j], visible=True)
            fig.add_trace(go.Scatter(x=ns, y=cost[:, j], error_y=err, mode="lines+markers",
                                     name=p, legendgroup=p, line=dict(color=color),
                                     visible=(v == values[0]),
                                     hovertemplate=f"{p}: N=%{{x}}, cost %{{y:.4g}}<extra></extra>"),
                          row=1, col=1)
            idx.append(len(fig.data) - 1)
            fig.add_trace(go.Scatter(x=ns, y=comp[:, j] * 100, mode="lines+markers", name=p,
                                     legendgroup=p, showlegend=False, line=dict(color=color),
                                     visible=(v == values[0]),
                                     hovertemplate=f"{p}: N=%{{x}}, %{{y:.1f}} %<extra></extra>"),
                          row=1, col=2)
            idx.append(len(fig.data) - 1)
        groups.append(idx)
    fig.update_xaxes(title_text="number of EDs N")
    fig.update_yaxes(title_text="cost (Eq 6 + penalties)", row=1, col=1)
    fig.update_yaxes(title_text="completed tasks (%)", range=[0, 105], row=1, col=2)
    layout = dict(title=title, height=460,
                  legend=dict(orientation="h", x=0.0, y=1.1, xanchor="left", yanchor="bottom"),
                  margin=dict(t=110))
    if slider_key is not None:
        steps = []
        for v, idx in zip(values, groups):
            vis = [False] * len(fig.data)
            for i in idx:
                vis[i] = True
            steps.append(dict(method="update", label=f"{v:g}", args=[{"visible": vis}]))
        layout["sliders"] = [dict(active=0, steps=steps, pad=dict(t=60),
                                  currentvalue=dict(prefix=slider_label, suffix=slider_unit))]
        layout["height"] = 560
    fig.update_layout(**layout)
    return fig


def policy_bars_figure(rows, title: str = "") -> go.Figure:
    """Bars of system cost per episode (± std) and completion rate, one bar per scheme, for rows
    of a single (N, λ)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=("system cost per episode", "task completion rate"))
    names = [r["policy"] for r in rows]
    colors = [POLICY_COLORS.get(p, "#333333") for p in names]
    fig.add_trace(go.Bar(x=names, y=[r["system_cost"] for r in rows], marker_color=colors,
                         error_y=dict(type="data", array=[r["system_cost_std"] for r in rows]),
                         showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[100 * r["completion_rate"] for r in rows],
                         marker_color=colors, showlegend=False), row=1, col=2)
    fig.update_yaxes(title_text="cost (Eq 6 + penalties)", row=1, col=1)
    fig.update_yaxes(title_text="completed tasks (%)", range=[0, 105], row=1, col=2)
    fig.update_layout(title=title, height=400)
    return fig
