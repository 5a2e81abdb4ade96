"""The exact optimum of small DCI instances: a time-expanded MILP solved with HiGHS.

Explained in the book's chapter "System cost and the optimisation problem" (problem P1, Eqs 6–10),
where it is compared with the Greedy and LC baselines of :mod:`dcicore.baselines`.

What is optimised
-----------------
A *small instance* is a :class:`~dcicore.config.SystemConfig` with no arrivals and no background
load (``arrival_rate_hz = background_load_max = mec_background_load_max = 0``), so that
:class:`~dcicore.env.DCIEnv` is deterministic once reset with a seed and
``options={"initial_tasks": counts}`` (and optionally ``"scenario"``). The objective is the
environment's own return, negated: Σ over slots of [ω_e·E + ω_d·D of the stages started] plus
P per failed task. The decisions are the environment's discrete actions — node, block end, share
level 1..levels, subcarrier — for every ready task in every slot. :func:`small_config` builds such
a config.

The formulation (one path per task in a time-expanded graph)
-----------------------------------------------------------
*States* of task q are (i, m, t): next layer i, node m holding its data, slot t, for the slots
t < D, D = the first slot with t·slot ≥ T (from D on, a ready task fails: the env's "late"
rule). *Arcs* leave a state:

* **stage** (n, j, s): layers i..j on node n at share level s. Its cost, duration, busy slots
  b = ceil(duration / slot), subcarrier slots and the deadline test (10) use the same formulas
  as :func:`dcicore.schedule.start_stages` (Eqs 1–5), with ``env.physics``. It leads to
  (j+1, n, t+b), to DONE if j = L−1, or to FAIL (+P) if t+b ≥ D.
* **wait**: (i, m, t) → (i, m, t+1), cost 0 (to FAIL, +P, if t+1 = D).
* **fail**: to FAIL, cost P.

One binary variable per arc; flow conservation gives each task one path from (0, source, 0) to
DONE or FAIL. Coupling constraints, per slot t:

* (8) for each node n: Σ levels of the stages occupying (n, t) ≤ levels (the background is 0);
* (7) Σ of the transmitting stages holding a subcarrier at t ≤ S. Every subcarrier of a link
  has the same gain (:mod:`dcicore.scenario`: g = d^-4 on every subcarrier), so Eq 2 gives the
  same rate on each: which subcarrier a task gets changes nothing but the count, and any
  set of ≤ (free subcarriers) movers can be given distinct free ones.

The catch: waiting and failing are not free in the environment
---------------------------------------------------------------
An action always asks for ≥ 1 share level. A ready task *waits* only when the node it asks for
(after the link repair) has no level left at its turn in row order — running stages plus the
requests of earlier rows fill it. It *fails* only when its granted stage cannot meet the
deadline (or when it is still ready at slot D). So two models are solved:

* **R, the relaxation**: waits and fails are free choices (no coupling). Every trajectory of
  the environment, after the level changes of the proof below, is a feasible R solution of no
  greater cost, so R's optimum is a lower bound.
* **E, the realisable model**: a wait is an arc *via* a node n the data can reach; it needs
  ``levels·x_wait ≤ (levels of stages running on n at t) + (levels started or requested on n at
  t by earlier rows)``, i.e. n is full before q's turn; a wait via n ≠ m also holds a subcarrier
  in that slot's assignment. A fail is an arc via a node n where even one level on all remaining
  layers misses the deadline; it asks for one level (counted at (n, t) in 8) and, if n ≠ m,
  a subcarrier. Every E solution is played by the environment exactly (checked by replay).
  Under ``conflict_rule="fail"`` a task granted nothing fails, so E has no waits (and does not
  use the extra ways to fail that rule opens; R still covers them).

* **B, a tighter relaxation** (used only to certify E's plan): E's waits and rows, except that
  a stage counts in a wait row with the largest level of its class (in the env a level above
  the pruned ones may fill a node) and an earlier row's failure counts as filling any node;
  failures are free as in R.

:func:`solve_exact` solves R and replays its plan; if the replay reproduces R's cost, the plan is
optimal for the environment (R is a relaxation). Otherwise it solves E and replays its plan
(falling back to the better of the played LC and Greedy plans if that is cheaper); if the plan
does not meet R's bound, B is solved for a better bound. ``lower_bound`` is the best bound;
``status`` is ``"optimal"`` when plan and bound agree (to 1e-6) and ``"gap"`` otherwise (the
true optimum then lies between the two).

How it is solved
----------------
HiGHS (through :func:`scipy.optimize.linprog` / :func:`scipy.optimize.milp`) first solves the LP
relaxation; when its optimum is already 0/1 it is the MILP optimum. Otherwise *reduced-cost
fixing* drops the arcs whose LP reduced cost exceeds (upper − LP bound), where upper is the cost
of a plan the environment really played (the better of LC and Greedy on the same instance; any
played plan bounds R's optimum from above, so no optimum is lost), and branch and bound runs
on the rest. In R a task that fails should fail at once: failing costs P however it happens and
an immediate failure holds nothing, so R keeps only arcs that can still reach DONE, plus one
fail arc per task at its start. For E, R's bound enters as a valid cut (cost ≥ R's optimum), so
HiGHS stops as soon as it meets it.

Pruning share levels (proof)
----------------------------
Fix a state, a node n and a block end j. The stage cost is
c(s) = ω_e(k0·C·(s·R/levels)² + p·τ) + ω_d(C·levels/(s·R) + τ) = a·s² + b/s + const with
a, b ≥ 0, convex in s > 0. The deadline test holds for s ≥ s_lo (duration falls with s) and the
busy slots b(s) fall with s, so the feasible levels split into intervals ("classes") of equal b.
Inside a class every level leads to the same next state and occupies the same slots on the same
node and the same subcarrier slots; only the level (capacity used) and the cost differ.
Let s_k = argmin of c over the class (the smallest one on ties).

1. A level s > s_k costs more and uses more capacity than s_k. In R (and in E's capacity and
   subcarrier rows) lowering a level keeps every constraint, so s > s_k is never needed.
   (Not in E's wait rows: a higher level could fill a node so that another task may wait. E
   therefore may lose such plans; the R bound certifies whether that mattered.)
2. Let O_q,n = Σ over the other tasks q' of the largest s_k of q' on n (at least 1 where q' may
   send a one-level fail request there): after step 1 no solution holds more than that on n
   besides q (one stage or one fail request per task at a time).
   A level s < min(s_k, levels − O_q,n) can be raised to that value: capacity still holds, the
   cost does not rise (c is non-increasing on [s_lo, s_k]), and waits only gain.

So each class keeps the levels [max(s_lo, min(s_k, levels − O_q,n)), s_k]; with one task that is
the single level s_k. (O is taken per slot: the stage's slots t..t+b−1 use the largest O there.)

Validation: :func:`exhaustive_single_task` (brute force with the env's own scheduler, no pruning)
agrees with the MILP on one-task instances, and every plan is replayed in a fresh environment.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from dcicore.config import SystemConfig
from dcicore.schedule import SlotInputs, _slots, start_stages

__all__ = [
    "ExactResult",
    "deadline_slot",
    "small_config",
    "spread_tasks",
    "solve_exact",
    "exhaustive_single_task",
    "run_policy",
    "solve_time_table",
]

_STAGE, _WAIT, _FAIL = 0, 1, 2
_DONE, _FAILED = -1, -2
_TOL = 1e-6  # optimality tolerance of HiGHS (its absolute MIP gap), in cost units


@dataclass
class ExactResult:
    """Outcome of :func:`solve_exact`.

    Attributes
    ----------
    cost : float
        Σ stage costs (Eq 6 terms) + P × failures of the returned plan (= −return).
    actions : list of (M, 4) int arrays
        One action per slot of the episode; replaying them in a fresh env (same seed and
        options) gives ``cost``.
    status : str
        ``"optimal"`` (the played plan meets R's bound), ``"gap"`` (a played plan above the
        bound), ``"time_limit"`` (HiGHS stopped early and the bound was not met).
    solve_s : float
        Wall-clock seconds of the whole solve (building, playing LC and Greedy for the upper
        bound, HiGHS, replays).
    num_variables : int
        Binary variables of the last MILP solved.
    lower_bound : float
        Optimum (or HiGHS's bound) of the relaxation R, raised by B where it was solved.
    num_constraints : int
        Rows of the last MILP solved.
    model : str
        ``"R"`` if R's plan was played exactly, ``"E"`` if E's was; ``"LC"`` or ``"Greedy"``
        if no MILP plan beat that heuristic's played plan (E's restriction, or a time limit).
    plan : dict
        Task row -> {slot: event}, events ``("stage", node, end, level)``, ``("wait", via)``,
        ``("fail", via)`` (via −1: any node that works); empty when ``model`` is a heuristic.
    """

    cost: float
    actions: list
    status: str
    solve_s: float
    num_variables: int
    lower_bound: float = float("nan")
    num_constraints: int = 0
    model: str = "R"
    plan: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- instances
def deadline_slot(config: SystemConfig) -> int:
    """D: the first slot t ≥ 1 with t·slot ≥ T (the env's "late" test); stages start at t < D."""
    t = 1
    while t * config.slot_s < config.deadline_s - 1e-9:
        t += 1
    return t


def small_config(num_devices: int = 2, **changes) -> SystemConfig:
    """A deterministic small-instance config: no arrivals, no background load, and a horizon of
    D + 1 slots (every task finishes or fails inside the episode). ``changes`` override fields."""
    quiet = dict(arrival_rate_hz=0.0, background_load_max=0.0, mec_background_load_max=0.0)
    cfg = SystemConfig(num_devices=num_devices, **{**quiet, **changes})
    if "episode_slots" not in changes:
        cfg = replace(cfg, episode_slots=deadline_slot(cfg) + 1)
    return cfg


def spread_tasks(num_tasks: int, num_devices: int) -> np.ndarray:
    """``num_tasks`` initial tasks dealt round-robin over the EDs, shape (N,)."""
    return np.bincount(np.arange(num_tasks) % num_devices, minlength=num_devices).astype(np.int64)


def _check_small(config: SystemConfig) -> None:
    for name in ("arrival_rate_hz", "background_load_max", "mec_background_load_max"):
        if getattr(config, name) != 0:
            raise ValueError(
                f"{name} must be 0 for an exact solve (deterministic env), got {getattr(config, name)!r}"
            )
    need = deadline_slot(config) + 1
    if config.episode_slots < need:
        raise ValueError(
            f"episode_slots must be >= ceil(T/slot) + 1 = {need} so every task ends in the episode, "
            f"got {config.episode_slots}"
        )


def _reset(config, seed, initial_tasks, scenario):
    from dcicore.env import DCIEnv

    env = DCIEnv(config)
    options = {}
    if initial_tasks is not None:
        options["initial_tasks"] = np.asarray(initial_tasks, dtype=np.int64)
    if scenario is not None:
        options["scenario"] = scenario
    _, info = env.reset(seed=seed, options=options)
    return env, int(info["dropped"])


def _setup(env_or_config, seed, initial_tasks, scenario):
    config = getattr(env_or_config, "config", env_or_config)
    if not isinstance(config, SystemConfig):
        raise ValueError(
            f"env_or_config must be a SystemConfig or a DCIEnv, got {type(env_or_config).__name__}"
        )
    _check_small(config)
    env, dropped = _reset(config, seed, initial_tasks, scenario)
    rows = np.flatnonzero(env.active)
    tasks = [(int(r), int(env.row_source[r])) for r in rows]  # row order = priority order
    return config, env, dropped, tasks


# ----------------------------------------------------------------------------- stage table
class _Tables:
    """Every stage option (n, j, s) of a state, computed as :func:`start_stages` computes it."""

    def __init__(self, config: SystemConfig, ph):
        self.c, self.ph = config, ph
        self.n1 = ph.capacity_hz.size
        self.L = ph.num_layers
        self.lv = ph.share_levels
        self.cache = {}

    def get(self, i, m, t, src):
        key = (i, m, t, src if self.ph.return_result else -1)
        if key not in self.cache:
            self.cache[key] = self._compute(i, m, t, src)
        return self.cache[key]

    def _compute(self, i, m, t, src):
        c, ph, L = self.c, self.ph, self.L
        n = np.arange(self.n1)[:, None, None]
        j = np.maximum(np.arange(L), i)[None, :, None]
        s = np.arange(1, self.lv + 1)[None, None, :]
        cycles = ph.cum_cycles[j + 1] - ph.cum_cycles[i]
        share_hz = s / ph.share_levels * ph.capacity_hz[n]
        comp = cycles / share_hz
        moving = np.broadcast_to(n != m, comp.shape)
        # unreachable nodes get a dummy rate (they are masked out by ``valid``)
        rate = np.where(ph.link[m, n], ph.rate_bps[m, n], 1.0)
        trans = np.where(moving, ph.in_bits[i] / np.where(moving, rate, 1.0), 0.0)
        if ph.return_result:
            final = (j == L - 1) & (n != src)
            back = np.where(ph.link[n, src], ph.rate_bps[n, src], ph.slowest_rate_bps)
            trans = trans + np.where(final, ph.final_bits / np.where(final, back, 1.0), 0.0)
        trans = np.broadcast_to(trans, comp.shape)
        e_comp = ph.k0_node[n] * cycles * share_hz**2
        e_trans = ph.tx_power_w * trans
        elapsed = t * c.slot_s
        fits = elapsed + trans + comp <= ph.deadline_s + 1e-9
        valid = np.broadcast_to((np.arange(L) >= i)[None, :, None] & ph.link[m][:, None, None], comp.shape)
        cost = c.w_energy * (e_comp + e_trans) + c.w_delay * (comp + trans)
        busy = _slots(trans + comp, c.slot_s)
        cslots = np.where(moving, _slots(trans, c.slot_s), 0)
        # fail option via n: one level on all remaining layers misses the deadline
        fail_via = valid[:, L - 1, 0] & ~fits[:, L - 1, 0]
        classes = []  # (n, j, b, lo, hi, keep, cslots) with 1-based levels
        ok = valid & fits
        for nn in range(self.n1):
            for jj in range(i, L):
                f = np.flatnonzero(ok[nn, jj])
                if f.size == 0:
                    continue
                lo = int(f[0])  # fits is monotone in s: every level from lo up fits
                b = busy[nn, jj, lo:]
                cuts = np.flatnonzero(np.diff(b) != 0) + 1
                for a0, a1 in zip(np.r_[0, cuts], np.r_[cuts, b.size]):
                    s0, s1 = lo + int(a0), lo + int(a1) - 1
                    keep = s0 + int(np.argmin(cost[nn, jj, s0 : s1 + 1]))
                    classes.append((nn, jj, int(b[a0]), s0 + 1, s1 + 1, keep + 1, int(cslots[nn, jj, s0])))
        return dict(cost=cost, classes=classes, fail_via=fail_via, fits=fits)


# ----------------------------------------------------------------------------- the MILP
class _Model:
    """Arcs, states and constraint rows of one instance (R or E)."""

    def __init__(self, config, env, tasks):
        self.c = config
        self.ph = env.physics
        self.tables = _Tables(config, self.ph)
        self.tasks = tasks
        self.D = deadline_slot(config)
        self.n1 = self.ph.capacity_hz.size
        self.cap = int(math.floor(config.share_levels * (1.0 - 0.0) + 1e-9))
        self._explore()

    def _explore(self):
        """States reachable from each task's source by stages and waits; the largest useful level
        s_k of every task on every node (pruning rule 2)."""
        L, D = self.c.num_layers, self.D
        self.states = []  # per task: dict (i, m, t) -> table
        # largest level s_k (or a one-level fail request) each task may hold on (node, slot)
        self.max_keep = np.zeros((len(self.tasks), self.n1, D), dtype=np.int64)
        for q, (_, src) in enumerate(self.tasks):
            seen = {}
            todo = deque([(0, src, 0)])
            while todo:
                st = todo.popleft()
                if st in seen:
                    continue
                i, m, t = st
                tab = self.tables.get(i, m, t, src)
                seen[st] = tab
                hold = self.max_keep[q, :, t]
                hold[tab["fail_via"]] = np.maximum(hold[tab["fail_via"]], 1)
                for n, j, b, lo, hi, keep, cs in tab["classes"]:
                    span = self.max_keep[q, n, t : t + b]
                    span[:] = np.maximum(span, keep)
                    if j < L - 1 and t + b < D:
                        todo.append((j + 1, n, t + b))
                if t + 1 < D:
                    todo.append((i, m, t + 1))
            self.states.append(seen)
        self.other_max = self.max_keep.sum(0)[None] - self.max_keep  # (Q, N+1, D)

    def build(self, kind: str):
        """Arc lists and the sparse constraint matrix of model ``kind`` ("R" or "E")."""
        c, L, D, P = self.c, self.c.num_layers, self.D, self.c.penalty
        waits_exist = c.conflict_rule == "repair"
        keys = ("task", "kind", "src", "dst", "cost", "node", "level", "t", "busy", "cs", "end", "via", "hi")
        cols = {k: [] for k in keys}

        def arc(q, kind_, sid, dst, cost, node=-1, level=0, t=0, busy=0, cs=0, end=-1, via=-1, hi=0):
            for k, v in zip(keys, (q, kind_, sid, dst, cost, node, level, t, busy, cs, end, via, hi)):
                cols[k].append(v)

        sid_of = {}
        for q, seen in enumerate(self.states):
            for st in seen:
                sid_of[(q,) + st] = len(sid_of)
        self.sid_of = sid_of
        for q, seen in enumerate(self.states):
            for (i, m, t), tab in seen.items():
                sid = sid_of[(q, i, m, t)]
                for n, j, b, lo, hi, keep, cs in tab["classes"]:
                    room = self.cap - int(self.other_max[q, n, t : t + b].max())
                    s_from = max(lo, min(keep, room))
                    if j == L - 1:
                        dst, extra = _DONE, 0.0
                    elif t + b < D:
                        dst, extra = sid_of[(q, j + 1, n, t + b)], 0.0
                    else:
                        dst, extra = _FAILED, P
                    for s in range(s_from, keep + 1):
                        arc(q, _STAGE, sid, dst, float(tab["cost"][n, j, s - 1]) + extra,
                            node=n, level=s, t=t, busy=b, cs=cs, end=j, hi=hi)
                w_dst, w_cost = (sid_of[(q, i, m, t + 1)], 0.0) if t + 1 < D else (_FAILED, P)
                if kind == "R":
                    arc(q, _WAIT, sid, w_dst, w_cost, t=t)
                if kind in "RB":
                    arc(q, _FAIL, sid, _FAILED, P, t=t)
                if kind == "R":
                    continue
                reach = np.flatnonzero(self.ph.link[m])
                for n in reach:
                    if waits_exist:
                        arc(q, _WAIT, sid, w_dst, w_cost, node=int(n), t=t, cs=int(n != m), via=int(n))
                    if kind == "E" and tab["fail_via"][n]:
                        arc(q, _FAIL, sid, _FAILED, P, node=int(n), level=1, t=t, cs=int(n != m), via=int(n))
        a = {k: np.asarray(v) for k, v in cols.items()}
        if kind == "R":
            a = self._prune_failing(a)
        self.arcs = a
        nv = a["cost"].size
        rows, cols_, vals, lo, hi = [], [], [], [], []

        def add_row(idx, coef, lb, ub):
            r = len(lo)
            rows.extend([r] * len(idx))
            cols_.extend(idx)
            vals.extend(coef)
            lo.append(lb)
            hi.append(ub)

        # flow conservation: out − in = 1 at each task's source state, 0 elsewhere
        ns = len(sid_of)
        arange = np.arange(nv)
        inner = a["dst"] >= 0
        fr = np.r_[a["src"], a["dst"][inner]]
        fc = np.r_[arange, arange[inner]]
        fv = np.r_[np.ones(nv), -np.ones(int(inner.sum()))]
        rhs = np.zeros(ns)
        for q, (_, src) in enumerate(self.tasks):
            rhs[sid_of[(q, 0, src, 0)]] = 1.0
        stage = a["kind"] == _STAGE
        req = (a["kind"] == _FAIL) & (a["via"] >= 0)  # E's one-level failing requests
        # (8) capacity per (node, slot); (7) subcarriers per slot
        cover_n, cover_t, cover_i, cover_v = [], [], [], []
        car_t, car_i = [], []
        for k in np.flatnonzero(stage):
            t0, b, n, s, cs = a["t"][k], a["busy"][k], a["node"][k], a["level"][k], a["cs"][k]
            for tt in range(t0, min(t0 + b, D)):
                cover_n.append(n), cover_t.append(tt), cover_i.append(k), cover_v.append(s)
            for tt in range(t0, min(t0 + cs, D)):
                car_t.append(tt), car_i.append(k)
        for k in np.flatnonzero(req):
            cover_n.append(a["via"][k]), cover_t.append(a["t"][k]), cover_i.append(k), cover_v.append(1)
        for k in np.flatnonzero((a["kind"] != _STAGE) & (a["cs"] > 0)):
            car_t.append(a["t"][k]), car_i.append(k)
        cover_n, cover_t = np.asarray(cover_n, dtype=np.int64), np.asarray(cover_t, dtype=np.int64)
        cover_i, cover_v = np.asarray(cover_i, dtype=np.int64), np.asarray(cover_v, dtype=float)
        key = cover_n * D + cover_t
        is_stage = stage[cover_i]
        for kk in np.unique(key):
            sel = key == kk
            if cover_v[sel].sum() > self.cap:  # rows that can never bind are left out
                add_row(cover_i[sel], cover_v[sel], -np.inf, self.cap)
                # valid cuts that tighten the LP: at most k−1 stages holding more than 1/k of
                # the node can share a slot (k of them would exceed it); one row per k that
                # involves at least k tasks
                for k in (2, 3, 4):
                    big = sel & is_stage & (cover_v * k > self.cap)
                    if np.unique(a["task"][cover_i[big]]).size >= k:
                        add_row(cover_i[big], np.ones(int(big.sum())), -np.inf, k - 1)
        car_t, car_i = np.asarray(car_t, dtype=np.int64), np.asarray(car_i, dtype=np.int64)
        for tt in np.unique(car_t):
            sel = car_t == tt
            if sel.sum() > c.num_subcarriers:
                add_row(car_i[sel], np.ones(int(sel.sum())), -np.inf, c.num_subcarriers)
        if kind in "EB" and waits_exist:
            self._wait_rows(add_row, relaxed=kind == "B")
        self._area_rows(add_row)
        A_flow = sparse.csr_array((fv, (fr, fc)), shape=(ns, nv))
        if lo:
            A_cpl = sparse.csr_array((np.asarray(vals, float), (rows, cols_)), shape=(len(lo), nv))
            A = sparse.vstack([A_flow, A_cpl]).tocsr()
        else:
            A = A_flow
        self.A = A
        self.lb = np.r_[rhs, np.asarray(lo, float)]
        self.ub = np.r_[rhs, np.asarray(hi, float)]
        return nv, A.shape[0]

    def _prune_failing(self, a):
        """R only: a task that fails pays P however it fails, and in R a failure at its source
        state holds no capacity and no subcarrier; every other path ending in FAIL costs at least
        as much (costs are ≥ 0) and holds more. So R keeps only the arcs on some path to DONE and
        the fail arc at each source state."""
        alive = np.zeros(len(self.sid_of), dtype=bool)
        into = a["dst"]
        moves = np.flatnonzero(a["kind"] != _FAIL)
        changed = True
        while changed:  # backward reachability of DONE (the graph is acyclic and small)
            ok = (into[moves] == _DONE) | ((into[moves] >= 0) & alive[np.maximum(into[moves], 0)])
            new = alive.copy()
            new[a["src"][moves[ok]]] = True
            changed = bool((new != alive).any())
            alive = new
        sources = np.zeros(len(self.sid_of), dtype=bool)
        for q, (_, src) in enumerate(self.tasks):
            sources[self.sid_of[(q, 0, src, 0)]] = True
        dst = a["dst"]
        keep = ((a["kind"] != _FAIL) & ((dst == _DONE) | ((dst >= 0) & alive[np.maximum(dst, 0)])))
        keep |= (a["kind"] == _FAIL) & sources[a["src"]]
        return {k: v[keep] for k, v in a.items()}

    def _area_rows(self, add_row):
        """Valid cuts for tasks confined to one node n (every stage arc of the task is on n, e.g.
        an ED with no link): a completed task holds at least A_q level-slots of n before D (A_q:
        the least Σ level × slots over its paths to DONE), and n offers levels × D of them, so
        at most k of these tasks complete, k = how many of the smallest A_q fit."""
        a, D = self.arcs, self.D
        stage = a["kind"] == _STAGE
        done_arcs = {}
        for q in range(len(self.tasks)):
            mine = np.flatnonzero(stage & (a["task"] == q))
            nodes = np.unique(a["node"][mine])
            if nodes.size != 1:
                continue
            area = np.full(len(self.sid_of), np.inf)  # least level-slots from a state to DONE
            moves = mine[np.argsort(-a["t"][mine], kind="stable")]
            waits = np.flatnonzero((a["kind"] == _WAIT) & (a["task"] == q))
            waits = waits[np.argsort(-a["t"][waits], kind="stable")]
            for t in range(D - 1, -1, -1):  # the graph moves forward in time: sweep backwards
                for k in moves[a["t"][moves] == t]:
                    d = a["dst"][k]
                    tail = 0.0 if d == _DONE else (area[d] if d >= 0 else np.inf)
                    use = a["level"][k] * min(a["busy"][k], D - t) + tail
                    area[a["src"][k]] = min(area[a["src"][k]], use)
                for k in waits[a["t"][waits] == t]:
                    if a["dst"][k] >= 0:
                        area[a["src"][k]] = min(area[a["src"][k]], area[a["dst"][k]])
            _, src = self.tasks[q]
            need = area[self.sid_of[(q, 0, src, 0)]]
            if np.isfinite(need):
                done_arcs.setdefault(int(nodes[0]), []).append((need, mine[a["dst"][mine] == _DONE]))
        for group in done_arcs.values():
            needs = np.sort([g[0] for g in group])
            k = int(np.searchsorted(np.cumsum(needs), self.cap * D, side="right"))
            if k < len(group):
                idx = np.concatenate([g[1] for g in group])
                add_row(idx, np.ones(idx.size), -np.inf, k)

    def _wait_rows(self, add_row, relaxed=False):
        """E: a wait via n at slot t needs n full before the task's turn (row order).

        ``relaxed`` (model B): a stage counts with the largest level of its class (a level above
        s_k may fill the node in the env) and an earlier row's failure with the whole node (its
        request may ask any level), so every wait the env can make stays possible."""
        a = self.arcs
        waits = np.flatnonzero(a["kind"] == _WAIT)
        stage = np.flatnonzero(a["kind"] == _STAGE)
        reqs = np.flatnonzero(a["kind"] == _FAIL)
        lev = a["hi"] if relaxed else a["level"]
        for q in range(len(self.tasks)):
            wq = waits[a["task"][waits] == q]
            for n, t in {(int(a["via"][k]), int(a["t"][k])) for k in wq}:
                mine = wq[(a["via"][wq] == n) & (a["t"][wq] == t)]
                on_n = stage[a["node"][stage] == n]
                t0, t1 = a["t"][on_n], a["t"][on_n] + a["busy"][on_n]
                running = on_n[(t0 < t) & (t1 > t) & (a["task"][on_n] != q)]
                earlier = on_n[(a["t"][on_n] == t) & (a["task"][on_n] < q)]
                via_ok = np.ones(reqs.size, bool) if relaxed else a["via"][reqs] == n
                early_req = reqs[via_ok & (a["t"][reqs] == t) & (a["task"][reqs] < q)]
                idx = np.r_[mine, running, earlier, early_req]
                coef = np.r_[np.full(mine.size, float(self.cap)), -lev[running], -lev[earlier],
                             -np.full(early_req.size, float(self.cap) if relaxed else 1.0)]
                add_row(idx, coef, -np.inf, 0.0)

    def solve(self, time_limit_s, upper=None, lower=None):
        """Solve the current model; returns (x, value, status, bound), status 0 = optimal.

        HiGHS first solves the LP relaxation. If its optimum is already 0/1 (the paths rarely
        compete) it is optimal for the MILP too. Otherwise, given ``upper`` (the cost of any plan
        the environment really played: it bounds R's optimum from above), *reduced-cost fixing*
        drops every arc whose LP reduced cost exceeds upper − LP bound (no solution using it can
        beat ``upper``), and branch and bound runs on the arcs left.
        """
        cost = self.arcs["cost"]
        nv = cost.size
        limit = max(float(time_limit_s), 1.0)
        A, lb, ub = self.A, self.lb, self.ub
        if lower is not None:
            # a valid cut (E's optimum is at least R's): lets HiGHS stop as soon as it meets R
            A = sparse.vstack([A, sparse.csr_array(cost[None, :])]).tocsr()
            lb, ub = np.r_[lb, lower - _TOL * max(1.0, abs(lower))], np.r_[ub, np.inf]
        eq = lb == ub
        upper_rows, lower_rows = ~eq & np.isfinite(ub), ~eq & np.isfinite(lb)
        lp = linprog(cost, A_ub=sparse.vstack([A[upper_rows], -A[lower_rows]]),
                     b_ub=np.r_[ub[upper_rows], -lb[lower_rows]], A_eq=A[eq], b_eq=ub[eq],
                     bounds=(0, 1), method="highs", options=dict(time_limit=limit))
        if lp.status == 0 and np.max(np.abs(lp.x - np.round(lp.x))) < 1e-9:
            self.solved_by = "LP"
            return np.round(lp.x), float(lp.fun), 0, float(lp.fun)
        keep = np.ones(nv, dtype=bool)
        if lp.status == 0 and upper is not None:
            keep = lp.lower.marginals <= (upper - lp.fun) + 1e-6 * max(1.0, abs(upper))
        self.solved_by = "MILP"
        res = milp(c=cost[keep], integrality=np.ones(int(keep.sum())), bounds=Bounds(0, 1),
                   constraints=LinearConstraint(A[:, keep], lb, ub),
                   options=dict(time_limit=limit, mip_rel_gap=1e-9))
        if res.x is None:
            return None, np.nan, res.status, float(lp.fun) if lp.status == 0 else -np.inf
        x = np.zeros(nv)
        x[keep] = np.round(res.x)
        bound = float(res.fun) if res.status == 0 else float(getattr(res, "mip_dual_bound", np.nan))
        if not keep.all():
            bound = min(bound, upper)  # the fixed arcs can only give solutions above ``upper``
        if lp.status == 0:
            bound = max(bound, float(lp.fun)) if np.isfinite(bound) else float(lp.fun)
        return x, float(res.fun), int(res.status), bound

    def plan(self, x):
        """Task row -> {slot: event} from a 0/1 solution, and its cost."""
        a = self.arcs
        chosen = np.flatnonzero(x > 0.5)
        by_src = {int(a["src"][k]): int(k) for k in chosen}
        plans, total = {}, 0.0
        for q, (row, src) in enumerate(self.tasks):
            ev, sid = {}, self.sid_of[(q, 0, src, 0)]
            while sid >= 0:
                k = by_src[sid]
                total += float(a["cost"][k])
                kind, t = int(a["kind"][k]), int(a["t"][k])
                if kind == _STAGE:
                    ev[t] = ("stage", int(a["node"][k]), int(a["end"][k]), int(a["level"][k]))
                elif kind == _WAIT:
                    ev[t] = ("wait", int(a["via"][k]))
                else:
                    ev[t] = ("fail", int(a["via"][k]))
                sid = int(a["dst"][k])
            plans[row] = ev
        return plans, total


# ----------------------------------------------------------------------------- replay
def _realize(config, seed, initial_tasks, scenario, plans, tables):
    """Play ``plans`` in a fresh env; returns (actions, cost) or None where the env cannot follow.

    Actions are built slot by slot in row order, as the env schedules: stages ask exactly their
    level and a distinct free subcarrier; a wait asks a node that is already full at its turn; a
    fail asks one level on a node where one level misses the deadline.
    """
    env, dropped = _reset(config, seed, initial_tasks, scenario)
    L, M = config.num_layers, config.max_tasks
    cost = config.penalty * dropped
    actions = []
    pending = {r: dict(ev) for r, ev in plans.items()}
    for t in range(config.episode_slots):
        a = np.zeros((M, 4), dtype=np.int64)
        left = env.free_levels().astype(np.int64)
        free_car = list(np.flatnonzero(env.carrier_busy == 0))
        for r in np.flatnonzero(env.ready_mask()):
            ev = pending.get(int(r), {}).pop(t, None)
            if ev is None:
                return None
            m, i = int(env.location[r]), int(env.next_layer[r])
            reach = [m] + [int(n) for n in np.flatnonzero(env.physics.link[m]) if n != m]
            if ev[0] == "stage":
                _, n, j, s = ev
                if left[n] < s or (n != m and not free_car):
                    return None
                car = free_car.pop(0) if n != m else 0
                a[r] = (n, j, s - 1, car)
                left[n] -= s
                continue
            # R's plans name no via node: try the own node first (no subcarrier needed)
            vias = [ev[1]] if ev[1] >= 0 else reach
            tab = tables.get(i, m, t, int(env.row_source[r]))
            kinds = [ev[0]]
            rest = pending.get(int(r), {})
            if ev[0] == "wait" and all(e[0] != "stage" for e in rest.values()):
                # only waits and a failure are left: failing now costs the same P
                kinds.append("fail")
            for kind in kinds:
                n = _pick_via(kind, vias if kind == ev[0] else reach, m, left, free_car, tab)
                if n is not None:
                    break
            else:
                return None
            if kind != ev[0]:
                rest.clear()
            if kind == "fail":
                left[n] -= 1
            car = free_car.pop(0) if n != m else 0
            a[r] = (n, L - 1, 0, car)
        _, reward, _, _, _ = env.step(a)
        cost += -reward
        actions.append(a)
    if any(pending.values()):
        return None
    return actions, float(cost)


def _pick_via(kind, vias, m, left, free_car, tab):
    """A node through which a wait (node full) or a fail (one level misses the deadline) works."""
    for n in vias:
        if n != m and not free_car:
            continue
        if kind == "wait" and left[n] == 0:
            return n
        if kind == "fail" and left[n] >= 1 and tab["fail_via"][n]:
            return n
    return None


# ----------------------------------------------------------------------------- public API
def solve_exact(env_or_config, seed: int = 0, initial_tasks=None, time_limit_s: float = 60.0,
                scenario=None) -> ExactResult:
    """The minimum of −return over every action sequence of a small instance (see module doc).

    Parameters
    ----------
    env_or_config : SystemConfig or DCIEnv
        A small-instance config (:func:`small_config`) or an env holding one (only its config is
        used; a fresh env is reset).
    seed : int
        Seed of ``env.reset`` (draws the scenario unless ``scenario`` is given).
    initial_tasks : array_like of N ints
        Tasks present at slot 0 on each ED (``options["initial_tasks"]``).
    time_limit_s : float
        Wall-clock limit for HiGHS over both models, in s.
    scenario : Scenario, optional
        A hand-built scenario (``options["scenario"]``).
    """
    start = time.perf_counter()
    config, env, dropped, tasks = _setup(env_or_config, seed, initial_tasks, scenario)
    base = config.penalty * dropped
    model = _Model(config, env, tasks)
    empty = {r: {} for r, _ in tasks}
    if not tasks:
        real = _realize(config, seed, initial_tasks, scenario, empty, model.tables)
        return ExactResult(base, real[0], "optimal", time.perf_counter() - start, 0, base, 0, "R", {})
    nv, nc = model.build("R")
    # any plan the env really plays bounds R's optimum from above (used to fix arcs, see solve)
    played = {p: run_policy(p, config, seed, initial_tasks, scenario) for p in ("LC", "Greedy")}
    best = min(played, key=lambda p: played[p]["system_cost"])
    upper = played[best]["system_cost"]
    x, value, code, lower = model.solve(time_limit_s, upper=upper - base)
    lower = base + lower if np.isfinite(lower) else -np.inf
    real, used, plans = None, "R", {}
    if x is not None:
        plans, value = model.plan(x)
        real = _realize(config, seed, initial_tasks, scenario, plans, model.tables)
        if real is not None and abs(real[1] - (base + value)) > 1e-9 * max(1.0, abs(value)):
            real = None  # pragma: no cover - the env played something else
    left = time_limit_s - (time.perf_counter() - start)
    if real is None and left > 0:
        used = "E"
        nv, nc = model.build("E")
        cut = lower - base if np.isfinite(lower) else None
        # E is a restriction, so ``upper`` need not bound it: keep the fixed solve's answer only
        # if it comes out at or below ``upper`` (then no fixed arc could have done better)
        x, value, code_e, _ = model.solve(left, upper=upper - base, lower=cut)
        if x is None or (model.solved_by == "MILP" and value > upper - base + _TOL):
            left = time_limit_s - (time.perf_counter() - start)
            x, value, code_e, _ = model.solve(left, lower=cut)
        code = max(code, code_e)
        if x is not None:
            plans, value = model.plan(x)
            real = _realize(config, seed, initial_tasks, scenario, plans, model.tables)
            if real is None:  # pragma: no cover - would be a modelling bug
                raise RuntimeError("the environment did not follow the realisable plan")
    if real is None or real[1] > upper + _TOL:
        # E may miss plans that fill a node on purpose; a played heuristic plan is then better
        used, plans, value = best, {}, upper - base
        real = (played[best]["actions"], upper)
    cost = base + value
    left = time_limit_s - (time.perf_counter() - start)
    if cost - lower > _TOL * max(1.0, abs(lower)) and left > 0:
        # a tighter relaxation B (waits need a node that could be full) to certify the plan
        model.build("B")
        _, _, code_b, bound_b = model.solve(left, upper=cost - base)
        if np.isfinite(bound_b):
            lower = max(lower, base + bound_b)
        code = max(code, code_b)
    if cost - lower <= _TOL * max(1.0, abs(lower)):
        status = "optimal"  # the played plan meets the relaxation's bound
    elif code != 0:
        status = "time_limit"
    else:
        status = "gap"
    return ExactResult(cost=cost, actions=real[0], status=status, solve_s=time.perf_counter() - start,
                       num_variables=int(nv), lower_bound=float(lower), num_constraints=int(nc),
                       model=used, plan=plans)


def exhaustive_single_task(env_or_config, seed: int = 0, initial_tasks=None, scenario=None) -> float:
    """Brute force over every plan of an instance with exactly one task (for validation).

    Dynamic programming over the states (next layer, data location, slot): at each state *every*
    action (node, block end, share level; no pruning) is scheduled by the environment's own
    :func:`~dcicore.schedule.start_stages` in one vectorized call (unlimited capacity and a
    distinct subcarrier per candidate: a lone task competes with nobody). A candidate the
    scheduler fails costs P; a state at slot ≥ D costs P (late). A lone task never waits (no
    node is ever full when it is the only task). Returns the minimum cost (−return).
    """
    config, env, dropped, tasks = _setup(env_or_config, seed, initial_tasks, scenario)
    if len(tasks) != 1:
        raise ValueError(
            f"initial_tasks must hold exactly one task for exhaustive_single_task, got {len(tasks)}"
        )
    c, ph = config, env.physics
    (_, src), = tasks
    n1, L, lv = ph.capacity_hz.size, c.num_layers, c.share_levels
    nn, jj, ss = (g.ravel() for g in np.meshgrid(np.arange(n1), np.arange(L), np.arange(lv), indexing="ij"))
    K = nn.size
    action = np.stack([nn, jj, ss, np.arange(K)], axis=1).astype(np.int64)
    memo = {}

    def value(i, m, t):
        if i >= L:
            return 0.0
        if t * c.slot_s >= c.deadline_s - 1e-9:
            return c.penalty
        if (i, m, t) in memo:
            return memo[(i, m, t)]
        x = SlotInputs(ready=np.ones(K, bool), next_layer=np.full(K, i), location=np.full(K, m),
                       source=np.full(K, src), elapsed_s=np.full(K, t * c.slot_s),
                       free_levels=np.full(n1, K * lv), carrier_free=np.ones(K, bool), action=action)
        out = start_stages(ph, x)
        best = c.penalty if out.failed.any() else np.inf
        st = np.flatnonzero(out.started)
        cost = c.w_energy * (out.energy_comp_j + out.energy_trans_j) + c.w_delay * (out.comp_s + out.trans_s)
        nxt = {}
        for k in st:
            key = (int(out.end_layer[k]) + 1, int(out.node[k]), t + int(out.busy_slots[k]))
            nxt[key] = min(nxt.get(key, np.inf), float(cost[k]))
        for key, cst in nxt.items():
            best = min(best, cst + value(*key))
        memo[(i, m, t)] = best
        return best

    return float(c.penalty * dropped + value(0, src, 0))


def run_policy(policy, config: SystemConfig, seed: int = 0, initial_tasks=None, scenario=None) -> dict:
    """Play one episode of a small instance with a policy (a name of
    :data:`dcicore.baselines.POLICIES`, a callable ``f(env) -> action``, or a list of actions).

    Returns ``system_cost`` (−return, dropped tasks included), ``completions``, ``failures``,
    ``collaborations``, ``constraints_ok`` (every slot) and ``actions``.
    """
    from dcicore.baselines import make_policy

    env, dropped = _reset(config, seed, initial_tasks, scenario)
    fixed = policy if isinstance(policy, (list, tuple)) else None
    fn = None if fixed is not None else make_policy(policy, seed)
    out = dict(system_cost=config.penalty * dropped, completions=0, failures=dropped, collaborations=0,
               constraints_ok=True, actions=[])
    for t in range(config.episode_slots):
        a = np.asarray(fixed[t] if fixed is not None else fn(env), dtype=np.int64)
        _, reward, _, _, info = env.step(a)
        out["system_cost"] += -reward
        for k in ("completions", "failures", "collaborations"):
            out[k] += info[k]
        out["constraints_ok"] &= info["constraints_ok"]
        out["actions"].append(a)
    out["system_cost"] = float(out["system_cost"])
    return out


#: (num_devices, num_tasks) of :func:`solve_time_table`: N = 1..3 EDs, 1..4 tasks
TABLE_SIZES = tuple((n, q) for q in (1, 2, 3, 4) for n in (1, 2, 3))


def solve_time_table(sizes=TABLE_SIZES, seeds=(0,), time_limit_s: float = 60.0,
                     max_solve_s: float = 60.0, **config_changes) -> list:
    """Solve time of :func:`solve_exact` against instance size, with Greedy and LC alongside.

    ``sizes`` are (num_devices, num_tasks) pairs (keep them few for a quick run); tasks are dealt
    round-robin over the EDs (:func:`spread_tasks`) of :func:`small_config` (``config_changes``
    override its fields). Sizes run in the given order; once a solve takes longer than
    ``max_solve_s``, sizes with at least as many devices and tasks are skipped.

    Returns one dict per solve: ``num_devices``, ``num_tasks``, ``seed``, ``num_variables``,
    ``num_constraints``, ``solve_s``, ``status``, ``model``, ``exact_cost``, ``lower_bound``,
    ``greedy_cost``, ``lc_cost`` (costs = −return of the episode).
    """
    rows, too_slow = [], None
    for num_devices, num_tasks in sizes:
        if too_slow is not None and num_devices >= too_slow[0] and num_tasks >= too_slow[1]:
            continue
        counts = spread_tasks(num_tasks, num_devices)
        per_ed = max(int(counts.max()), 3)
        cfg = small_config(num_devices, max_tasks_per_device=per_ed, **config_changes)
        for seed in seeds:
            r = solve_exact(cfg, seed=seed, initial_tasks=counts, time_limit_s=time_limit_s)
            rows.append(dict(
                num_devices=num_devices, num_tasks=num_tasks, seed=seed, num_variables=r.num_variables,
                num_constraints=r.num_constraints, solve_s=r.solve_s, status=r.status, model=r.model,
                exact_cost=r.cost, lower_bound=r.lower_bound,
                greedy_cost=run_policy("Greedy", cfg, seed, counts)["system_cost"],
                lc_cost=run_policy("LC", cfg, seed, counts)["system_cost"],
            ))
            if r.solve_s > max_solve_s:
                too_slow = (num_devices, num_tasks)
    return rows
