"""Benchmark schemes of Sec 5.2.2 (LC, EC, Random), a Greedy heuristic, and ``evaluate``.

Explained in the book's chapter "The DCI system in time". The exact optimum of small
instances is in :mod:`dcicore.exact`.

A *policy* is any callable ``policy(env) -> action`` (or an object with ``act(env)``) that
reads the unwrapped :class:`~dcicore.env.DCIEnv` after ``reset``/``step`` and returns an
(M, 4) integer action. The heuristics choose shares the same way, so none is handicapped:

* **share rule** (LC, EC, Random) — the cheapest share level that still lets the task's
  remaining layers end before its deadline on the chosen node (:func:`cheapest_level`). The cost
  per cycle ω_e·k0·r² + ω_d/r (Eqs 1, 4, 6) is convex in the rate r with its minimum at
  r* = (ω_d / (2·ω_e·k0))^(1/3) ≈ 0.232 GHz, so the best level is the larger of the deadline
  level and the level next to r*. With the paper's numbers a whole task needs C/T ≈ 0.248 GHz
  > r*, so in practice this is "run just fast enough"; giving a task 100 % would cost up to
  10² J on the MEC. Greedy searches the levels itself (see :func:`greedy`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from dcicore.config import SystemConfig
from dcicore.costs import cost_optimal_rate

__all__ = [
    "local_computing",
    "edge_computing",
    "random_offloading",
    "greedy",
    "deadline_level",
    "cheapest_level",
    "POLICIES",
    "make_policy",
    "evaluate",
    "run_episode",
]


def _ready_rows(env):
    return np.flatnonzero(env.ready_mask())


def deadline_level(env, rows, nodes, last_layer=None, time_budget_s=None):
    """Smallest share level (1..levels) that runs layers next..last of ``rows`` on ``nodes``
    within the time left (or ``time_budget_s``), counting the transmission to the node.

    Returns ``(level, feasible)``: ``feasible`` is False where even 100 % is too slow or the
    node is unreachable; there ``level`` is the full ``share_levels``.
    """
    c = env.config
    ph = env.physics
    rows = np.asarray(rows, dtype=np.int64)
    nodes = np.asarray(nodes, dtype=np.int64)
    i = env.next_layer[rows]
    j = np.full(rows.shape, c.num_layers - 1) if last_layer is None else np.asarray(last_layer)
    loc = env.location[rows]
    cycles = ph.cum_cycles[j + 1] - ph.cum_cycles[i]
    moving = nodes != loc
    rate = ph.rate_bps[loc, nodes]
    reach = ph.link[loc, nodes]
    trans = np.where(moving, ph.in_bits[i] / np.where(rate > 0, rate, 1.0), 0.0)
    budget = env.time_left_s()[rows] if time_budget_s is None else np.asarray(time_budget_s)
    t_comp = budget - trans
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.ceil(c.share_levels * cycles / (ph.capacity_hz[nodes] * t_comp) - 1e-9)
    feasible = reach & (t_comp > 0) & (need <= c.share_levels)
    level = np.where(feasible, np.clip(need, 1, c.share_levels), c.share_levels).astype(np.int64)
    return level, feasible


def cheapest_level(env, rows, nodes):
    """Cheapest share level that still meets the deadline for running all remaining layers of
    ``rows`` on ``nodes``: the cost per cycle ω_e·k0·r² + ω_d/r is convex in r, so the optimum
    over the integer levels in [deadline level, max(deadline level, free levels)] is one of the
    deadline level, floor(s*) and ceil(s*), where s* is the level of r* = (ω_d/(2ω_e k0))^(1/3).

    Returns ``(level, feasible)`` like :func:`deadline_level`.
    """
    c = env.config
    ph = env.physics
    nodes = np.asarray(nodes, dtype=np.int64)
    need, feasible = deadline_level(env, rows, nodes)
    lv = c.share_levels
    cap = ph.capacity_hz[nodes]
    k0 = ph.k0_node[nodes]
    upper = np.maximum(need, np.minimum(env.free_levels()[nodes], lv))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r_star = cost_optimal_rate(c.w_energy, c.w_delay, k0)
        s_star = r_star * lv / cap
        best, best_cost = need.copy(), np.full(need.shape, np.inf)
        for cand in (need, np.floor(s_star), np.ceil(s_star)):
            s = np.clip(np.nan_to_num(cand, posinf=lv), need, upper).astype(np.int64)
            r = s / lv * cap
            cost = c.w_energy * k0 * r**2 + c.w_delay / r
            better = cost < best_cost - 1e-15
            best = np.where(better, s, best)
            best_cost = np.where(better, cost, best_cost)
    return np.where(feasible, best, need), feasible


def _action(env, rows, nodes, ends, levels, carriers=None):
    a = np.zeros((env.num_rows, 4), dtype=np.int64)
    a[rows, 0] = nodes
    a[rows, 1] = ends
    a[rows, 2] = np.asarray(levels) - 1
    if carriers is None:
        # each mover asks for a distinct free subcarrier, in row order
        free = np.flatnonzero(env.carrier_busy == 0)
        carriers = np.zeros(len(rows), dtype=np.int64)
        movers = np.flatnonzero(np.asarray(nodes) != env.location[rows])
        k = min(free.size, movers.size)
        carriers[movers[:k]] = free[:k]
    a[rows, 3] = carriers
    return a


def local_computing(env) -> np.ndarray:
    """LC: every task runs all its layers on its source ED, at the cheapest feasible share."""
    rows = _ready_rows(env)
    nodes = env.location[rows]
    level, _ = cheapest_level(env, rows, nodes)
    return _action(env, rows, nodes, env.config.num_layers - 1, level)


def edge_computing(env) -> np.ndarray:
    """EC: every task is sent whole to the MEC server (node 0), at the cheapest feasible share.

    A task whose ED cannot reach the MEC is repaired by the environment to run locally, as an
    ED out of range has no other choice under EC.
    """
    rows = _ready_rows(env)
    nodes = np.zeros(rows.size, dtype=np.int64)
    level, _ = cheapest_level(env, rows, nodes)
    return _action(env, rows, nodes, env.config.num_layers - 1, level)


class RandomOffloading:
    """Random: each task picks LC or EC with probability 1/2 (the paper's "LC or OC", read as
    offloading to the MEC), at the cheapest feasible share. Seeded by ``evaluate``."""

    def __init__(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def __call__(self, env) -> np.ndarray:
        rows = _ready_rows(env)
        to_mec = self.rng.random(rows.size) < 0.5
        nodes = np.where(to_mec, 0, env.location[rows])
        level, _ = cheapest_level(env, rows, nodes)
        return _action(env, rows, nodes, env.config.num_layers - 1, level)


def random_offloading(env) -> np.ndarray:  # pragma: no cover - convenience, unseeded
    return RandomOffloading()(env)


def greedy(env) -> np.ndarray:
    """Greedy: per task and slot, the (node, block, share, subcarrier) of least estimated cost
    that still meets the deadline.

    Candidates are every node n the task's data can reach (with a free share level, and a free
    subcarrier if the data must move), every block end j and every share level s up to n's free
    levels. A candidate must end before the deadline. Its score is its own Eq 6 cost plus a
    look-ahead: the cheapest way to finish the layers after j in one more block, either on n or
    on a node n' that n reaches (paying the transmission), at the cheapest share level that ends
    in the time left once this stage's whole slots are over (slots are whole: a short block
    holds its node until the slot ends, and that time is lost to the rest). A candidate whose
    rest cannot meet the deadline anywhere is dropped. The look-ahead's cheapest level has a
    closed form (``finish_cost`` below); it may use only the levels of n' that are not held, at
    the slot the rest would start, by the stages already running (the env's busy counters) or
    granted earlier in this slot (the node's current capacity after background load is taken as
    its future capacity). It assumes a subcarrier will be free; it does not plan for tasks that
    have not chosen yet.

    Tasks are served in row order and each grant is subtracted from the node's free levels (and
    each subcarrier from the free ones) before the next task chooses, so the actions respect
    constraints 7 and 8 and need no repair. A task with no candidate (nothing meets the deadline)
    asks for its own node's free levels on all its layers (it will fail, or wait if that node is
    full).
    """
    c = env.config
    ph = env.physics
    rows = _ready_rows(env)
    a = np.zeros((env.num_rows, 4), dtype=np.int64)
    if rows.size == 0:
        return a
    free = env.free_levels().astype(np.int64)
    carriers = list(np.flatnonzero(env.carrier_busy == 0))
    L, lv = c.num_layers, c.share_levels
    ends = np.arange(L)
    levels = np.arange(1, lv + 1)
    max_busy = max(1, int(np.ceil(c.deadline_s / c.slot_s - 1e-9)))
    b_slots = np.arange(1, max_busy + 1)
    elapsed = (env.t - env.arrival_slot) * c.slot_s  # as the env computes it
    total_cycles = ph.cum_cycles[L]
    w_trans = c.w_energy * c.tx_power_w + c.w_delay  # cost of one second of transmission
    # held[n, k]: levels held on node n in slot t + k by running stages (and, below, by this
    # slot's grants); base: what each node offers before any stage holds a level
    running = env.busy > 0
    held = np.zeros((ph.capacity_hz.size, max_busy + 1))
    np.add.at(held, env.stage_node[running],
              env.stage_level[running][:, None] * (np.arange(max_busy + 1)[None, :] < env.busy[running][:, None]))
    base = free + held[:, 0]

    def finish_cost(rest_cycles, cap_hz, k0, time_s, max_level):
        """Cheapest Eq 6 cost of running ``rest_cycles`` in one block on a node of capacity
        ``cap_hz`` within ``time_s`` at ≤ ``max_level`` levels (Greedy's look-ahead); 0 where
        nothing is left, inf where even ``max_level`` is too slow. Broadcasts over arrays.

        The cost per cycle ω_e·k0·r² + ω_d/r is convex in the rate r with its minimum at
        r* = (ω_d / (2·ω_e·k0))^(1/3); so the best level is the larger of the deadline level and
        the integer level next to r* (the better of floor and ceil).
        """
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            need = np.ceil(lv * rest_cycles / (cap_hz * time_s) - 1e-9)
            s_star = cost_optimal_rate(c.w_energy, c.w_delay, k0) * lv / cap_hz
            best = np.inf
            for s_int in (np.floor(s_star), np.ceil(s_star)):
                s = np.clip(np.maximum(s_int, need), 1, np.maximum(max_level, 1))
                r = s / lv * cap_hz
                best = np.minimum(best, c.w_energy * k0 * rest_cycles * r**2 + c.w_delay * rest_cycles / r)
        feasible = (time_s > 0) & (need <= max_level)
        return np.where(rest_cycles <= 0, 0.0, np.where(feasible, best, np.inf))

    for r in rows:
        i = int(env.next_layer[r])
        loc = int(env.location[r])
        nodes = np.flatnonzero(ph.link[loc] & (free > 0))
        if not carriers:
            nodes = nodes[nodes == loc]
        best = None
        if nodes.size:
            moving = nodes != loc
            rate = np.where(moving, ph.rate_bps[loc, nodes], 1.0)
            trans = np.where(moving, ph.in_bits[i] / rate, 0.0)[:, None, None]  # (n, 1, 1)
            cap = ph.capacity_hz[nodes][:, None, None]
            k0 = ph.k0_node[nodes][:, None, None]
            jj = np.maximum(ends, i)
            cyc = (ph.cum_cycles[jj + 1] - ph.cum_cycles[i])[None, :, None]  # (1, L, 1)
            share_hz = levels[None, None, :] / lv * cap  # (n, 1, lv)
            comp = cyc / share_hz  # (n, L, lv)
            fits = elapsed[r] + trans + comp <= c.deadline_s + 1e-9
            ok = fits & (ends >= i)[None, :, None] & (levels[None, None, :] <= free[nodes][:, None, None])
            busy = np.maximum(1, np.ceil((trans + comp) / c.slot_s - 1e-9)).astype(np.int64)
            cost = c.w_energy * (k0 * cyc * share_hz**2 + c.tx_power_w * trans) + c.w_delay * (comp + trans)
            # look-ahead table: finish the layers after j, on n or on a node n' it reaches,
            # when the stage held b whole slots; shape (n, L, B)
            rest = total_cycles - ph.cum_cycles[jj + 1]  # (L,)
            time_rest = c.deadline_s - elapsed[r] - b_slots * c.slot_s  # (B,)
            tgt = np.flatnonzero(ph.link[nodes].any(0))  # every n' some candidate reaches
            hop = ph.link[nodes][:, tgt]  # n reaches n' (the diagonal: staying)
            rate2 = np.where(nodes[:, None] != tgt[None, :], np.where(hop, ph.rate_bps[nodes][:, tgt], 1.0), np.inf)
            t_move = ph.in_bits[np.minimum(jj + 1, L - 1)][None, None, :] / rate2[:, :, None]  # (n, n', L)
            avail = np.minimum(base[tgt][:, None] - held[tgt, 1:], lv)  # (n', B): levels free at t + b
            fin = finish_cost(
                rest[None, None, :, None], ph.capacity_hz[tgt][None, :, None, None],
                ph.k0_node[tgt][None, :, None, None], time_rest[None, None, None, :] - t_move[..., None],
                avail[None, :, None, :],
            ) + w_trans * t_move[..., None]  # (n, n', L, B)
            fin = np.where(hop[:, :, None, None], fin, np.inf).min(axis=1)  # (n, L, B)
            look = np.take_along_axis(fin, np.minimum(busy, max_busy) - 1, axis=2)
            cost = np.where(ok, cost + look, np.inf)
            k = int(np.argmin(cost))
            if np.isfinite(cost.flat[k]):
                ni, j, si = np.unravel_index(k, cost.shape)
                best = int(nodes[ni]), int(j), int(levels[si])
                held[best[0], : busy[ni, j, si]] += best[2]
        if best is None:
            # nothing meets the deadline: ask for the own node's free levels (it will fail)
            best = loc, L - 1, max(int(free[loc]), 1)
        n, j, lvl = best
        a[r, 0], a[r, 1], a[r, 2] = n, j, lvl - 1
        if n != loc and carriers:
            a[r, 3] = carriers.pop(0)
        free[n] = max(0, free[n] - lvl)
    return a


POLICIES: dict[str, Callable] = {
    "LC": lambda seed=None: local_computing,
    "EC": lambda seed=None: edge_computing,
    "Random": lambda seed=None: RandomOffloading(seed),
    "Greedy": lambda seed=None: greedy,
}


def make_policy(policy, seed=None):
    """A callable ``policy(env) -> action`` from a name in :data:`POLICIES` or a policy object."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)} or a policy object, got {policy!r}")
        return POLICIES[policy](seed)
    if hasattr(policy, "act"):
        return policy.act
    if callable(policy):
        return policy
    raise ValueError(f"policy must be a name in {sorted(POLICIES)} or callable, got {policy!r}")


def run_episode(policy_fn, config: SystemConfig, seed: int, record=False):
    """Run one episode; returns per-episode totals (and the per-slot infos if ``record``)."""
    from dcicore.env import DCIEnv

    env = DCIEnv(config)
    env.reset(seed=seed)
    totals = dict(system_cost=0.0, cost=0.0, energy_j=0.0, delay_s=0.0, completions=0,
                  failures=0, collaborations=0, arrivals=env.totals["arrivals"])
    # arrivals dropped at reset count as failures of this episode too
    totals["failures"] += env.totals["failures"]
    totals["system_cost"] += config.penalty * env.totals["failures"]
    infos = []
    truncated = False
    while not truncated:
        action = policy_fn(env)
        _, reward, _, truncated, info = env.step(action)
        totals["system_cost"] += -reward
        for key in ("cost", "energy_j", "delay_s", "completions", "failures", "collaborations", "arrivals"):
            totals[key] += info[key]
        if record:
            infos.append(info)
    return (totals, infos) if record else totals


def evaluate(policy, config: SystemConfig | None = None, episodes: int = 5, seed: int = 0) -> dict:
    """Average a policy over ``episodes`` seeded episodes (seeds ``seed .. seed+episodes-1``).

    Returns
    -------
    dict with
      ``system_cost``: mean per episode of Σ_slots [Eq 6 cost + P × failures] (= −return);
      ``completion_rate``: completed / (completed + failed) tasks over all episodes (tasks still
      running when an episode ends are not counted);
      ``collaborations``: mean per episode of stages that moved data to another node;
      ``energy_j``, ``delay_s``: mean per episode of Σ energy (J) and Σ stage delay (s);
      ``cost_per_task``: Σ system cost / Σ resolved tasks;
      (named heuristics always run with ``share_action="absolute"``: they choose levels); ``system_cost_std``: spread over
      episodes; ``episodes``: the per-episode totals.
    """
    from dcicore.config import check_range

    config = config if config is not None else SystemConfig()
    check_range("episodes", episodes, 1, None, integer=True)
    if isinstance(policy, str) and config.share_action != "absolute":
        # NOTE: the heuristics compute absolute share levels; the physical system is the same
        # whichever way an agent encodes its share, so they always run with absolute shares.
        config = replace(config, share_action="absolute")
    fn = make_policy(policy, seed)
    if hasattr(fn, "__self__") and hasattr(fn.__self__, "reset"):
        fn.__self__.reset(seed)
    elif hasattr(fn, "reset"):
        fn.reset(seed)
    per = [run_episode(fn, config, seed + e) for e in range(episodes)]
    comp = sum(p["completions"] for p in per)
    fail = sum(p["failures"] for p in per)
    costs = np.array([p["system_cost"] for p in per])
    return {
        "system_cost": float(costs.mean()),
        "system_cost_std": float(costs.std(ddof=1)) if episodes > 1 else 0.0,
        "completion_rate": comp / max(comp + fail, 1),
        "collaborations": float(np.mean([p["collaborations"] for p in per])),
        "energy_j": float(np.mean([p["energy_j"] for p in per])),
        "delay_s": float(np.mean([p["delay_s"] for p in per])),
        "cost_per_task": float(costs.sum() / max(comp + fail, 1)),
        "episodes": per,
    }
