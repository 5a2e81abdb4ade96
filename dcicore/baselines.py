"""Benchmark schemes of Sec 5.2.2 (LC, EC, Random), a Greedy heuristic, and ``evaluate``.

Explained in the book's chapter "The DCI system in time". The exact optimum of small
instances is in :mod:`dcicore.exact`.

A *policy* is any callable ``policy(env) -> action`` (or an object with ``act(env)``) that
reads the unwrapped :class:`~dcicore.env.DCIEnv` after ``reset``/``step`` and returns an
(M, 4) integer action. The heuristics choose shares the same way, so none is handicapped:

* **share rule** — the smallest share level that still lets the task's remaining layers end
  before its deadline on the chosen node (:func:`deadline_level`). Eq 4 makes energy grow with
  r², so running just fast enough is the cheapest way to meet the deadline; giving a task
  100 % would cost up to 10² J on the MEC.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dcicore.config import SystemConfig

__all__ = [
    "local_computing",
    "edge_computing",
    "random_offloading",
    "greedy",
    "deadline_level",
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


def _action(env, rows, nodes, ends, levels, carriers=None):
    c = env.config
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
    """LC: every task runs all its layers on its source ED, at the deadline share."""
    rows = _ready_rows(env)
    nodes = env.location[rows]
    level, _ = deadline_level(env, rows, nodes)
    return _action(env, rows, nodes, env.config.num_layers - 1, level)


def edge_computing(env) -> np.ndarray:
    """EC: every task is sent whole to the MEC server (node 0), at the deadline share.

    A task whose ED cannot reach the MEC is repaired by the environment to run locally, as an
    ED out of range has no other choice under EC.
    """
    rows = _ready_rows(env)
    nodes = np.zeros(rows.size, dtype=np.int64)
    level, _ = deadline_level(env, rows, nodes)
    return _action(env, rows, nodes, env.config.num_layers - 1, level)


class RandomOffloading:
    """Random: each task picks LC or EC with probability 1/2 (the paper's "LC or OC", read as
    offloading to the MEC), at the deadline share. Seeded by ``evaluate``."""

    def __init__(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def __call__(self, env) -> np.ndarray:
        rows = _ready_rows(env)
        to_mec = self.rng.random(rows.size) < 0.5
        nodes = np.where(to_mec, 0, env.location[rows])
        level, _ = deadline_level(env, rows, nodes)
        return _action(env, rows, nodes, env.config.num_layers - 1, level)


def random_offloading(env) -> np.ndarray:  # pragma: no cover - convenience, unseeded
    return RandomOffloading()(env)


def greedy(env) -> np.ndarray:
    """Greedy: per task and slot, the (node, block, share, subcarrier) of least marginal cost
    that still meets the deadline.

    Candidates are every reachable node n and every block end j. A block [i:j] gets a time
    budget proportional to its share of the task's remaining cycles (the rest of the time is
    left for the layers after it); its share is the smallest level meeting that budget. The
    marginal cost is the stage's own Eq 6 cost plus the cost of finishing the remaining layers
    on n at the same rate (a look-ahead, so that stopping early is not free). Tasks are served in
    row order and each grant is subtracted from the node's free share before the next task
    chooses, so the plan respects constraints 7 and 8 without repair.
    """
    c = env.config
    ph = env.physics
    rows = _ready_rows(env)
    a = np.zeros((env.num_rows, 4), dtype=np.int64)
    if rows.size == 0:
        return a
    free = env.free_levels().astype(np.int64)
    carriers = list(np.flatnonzero(env.carrier_busy == 0))
    n1, L = c.num_nodes, c.num_layers
    nodes = np.arange(n1)
    ends = np.arange(L)
    time_left = env.time_left_s()
    for r in rows:
        i = int(env.next_layer[r])
        loc = int(env.location[r])
        budget = time_left[r]
        cyc_rest = ph.cum_cycles[L] - ph.cum_cycles[i]
        cyc = ph.cum_cycles[ends + 1] - ph.cum_cycles[i]  # (L,) for blocks i..j
        valid_j = ends >= i
        moving = nodes != loc
        reach = ph.link[loc] & ((free > 0) | ~moving) & (free > 0)
        if not carriers:
            reach &= ~moving
        rate = np.where(moving, ph.rate_bps[loc], 1.0)
        trans = np.where(moving, ph.in_bits[i] / np.where(rate > 0, rate, 1.0), 0.0)  # (n1,)
        frac = np.where(valid_j, cyc / cyc_rest, 1.0)
        # time for the block: its share of the time left after the transmission
        t_block = (budget - trans)[:, None] * frac[None, :]  # (n1, L)
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.ceil(c.share_levels * cyc[None, :] / (ph.capacity_hz[:, None] * t_block) - 1e-9)
        ok = reach[:, None] & valid_j[None, :] & (t_block > 0) & (need <= free[:, None]) & (need >= 0)
        need = np.clip(need, 1, c.share_levels)
        share_hz = need / c.share_levels * ph.capacity_hz[:, None]
        comp = cyc[None, :] / share_hz
        # slots are whole: the next stage starts at a slot boundary
        busy = np.maximum(1, np.ceil((trans[:, None] + comp) / c.slot_s - 1e-9))
        last = ends[None, :] == L - 1
        ok &= np.where(last, trans[:, None] + comp <= budget + 1e-9, busy * c.slot_s < budget)
        energy = ph.k0_node[:, None] * cyc[None, :] * share_hz**2 + c.tx_power_w * trans[:, None]
        rest = cyc_rest - cyc[None, :]
        energy_rest = ph.k0_node[:, None] * rest * share_hz**2
        delay = trans[:, None] + comp + rest / share_hz
        cost = c.w_energy * (energy + energy_rest) + c.w_delay * delay
        cost = np.where(ok, cost, np.inf)
        k = int(np.argmin(cost))
        n, j = divmod(k, L)
        if not np.isfinite(cost[n, j]):
            # nothing meets the deadline: run locally at full free share (it will likely fail)
            n, j, lvl = loc, L - 1, max(int(free[loc]), 1)
        else:
            lvl = int(need[n, j])
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
      ``cost_per_task``: Σ system cost / Σ resolved tasks; ``system_cost_std``: spread over
      episodes; ``episodes``: the per-episode totals.
    """
    from dcicore.config import check_range

    config = config if config is not None else SystemConfig()
    check_range("episodes", episodes, 1, None, integer=True)
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
