"""One slot's scheduling: turn the agent's action a(t) into stages that satisfy constraints 7–10.

Explained in the book's chapters "The DCI system in time" and "The MDP".

Every ready task q gets a(t)_q = (node d, block end j, share level r, subcarrier w) (Eq 12).
The environment accepts *any* action of its ``MultiDiscrete`` space and **repairs** it, in a
fixed order that is part of the model (modelling-choices page):

1. *Block* (constraint 9): the block runs from the task's next layer i to j, with j clipped
   to [i, L-1]; blocks are consecutive, so every layer is processed exactly once.
2. *Link*: a node the task's data cannot reach over a direct link is replaced by the node
   where the data already is (no transmission).
3. *Subcarriers* (constraint 7): a task that moves its data keeps the subcarrier it asked for
   if that subcarrier is free and no earlier task (in row order) asked for it; the others get
   the lowest free subcarriers left, in row order; a task left without one computes where its
   data is.
4. *Capacity* (constraint 8): on each node the share levels are granted in row order,
   ``granted = min(requested, levels still free)``; a task granted nothing waits this slot.
With ``share_action="relative"`` the share index k is read, after rules 1–3 fix the node, as
``ceil(need · (1 + k/(levels−1)))`` where ``need`` is the smallest level that runs the block
within a time budget proportional to its share of the task's remaining cycles (after the
transmission): index 0 is "just fast enough", the last index twice that.

With ``conflict_rule="fail"`` a task whose action needed rule 2, 3 or 4 (a different node or
subcarrier, or fewer share levels than requested) fails instead (penalty P).

5. *Deadline* (constraint 10): a stage that cannot end before the task's deadline fails the
   task now (penalty P); its grant is not reserved.

Two implementations with the same semantics: :func:`start_stages` (vectorized numpy, no loop
over tasks or devices) and :func:`start_stages_reference` (a plain loop over tasks, the readable
specification). A test checks they agree; ``make bench`` measures the speed ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SlotInputs", "StageOutcome", "start_stages", "start_stages_reference"]


@dataclass
class SlotInputs:
    """Everything one slot's scheduling reads (arrays over M task rows / N+1 nodes / S carriers)."""

    ready: np.ndarray  # (M,) bool, task waiting for a decision
    next_layer: np.ndarray  # (M,) int, i, first unprocessed layer (0-based)
    location: np.ndarray  # (M,) int, node holding the task's data
    source: np.ndarray  # (M,) int, the ED that created the task
    elapsed_s: np.ndarray  # (M,) float, time since arrival at the slot's start
    free_levels: np.ndarray  # (N+1,) int, share levels free on each node this slot
    carrier_free: np.ndarray  # (S,) bool
    action: np.ndarray  # (M, 4) int: node, block end, share level - 1, subcarrier


@dataclass
class StageOutcome:
    """Per task row (M,): what the slot did. Rows that were not ready have started=failed=False."""

    started: np.ndarray  # bool, a stage started this slot
    failed: np.ndarray  # bool, the task failed (deadline infeasible)
    waiting: np.ndarray  # bool, ready but granted no capacity
    node: np.ndarray  # int, node of the stage (-1 if none)
    first_layer: np.ndarray  # int, i
    end_layer: np.ndarray  # int, j
    level: np.ndarray  # int, granted share level (0 if none)
    carrier: np.ndarray  # int, subcarrier used (-1 if none)
    moving: np.ndarray  # bool, the data moved to another node (a collaboration)
    trans_s: np.ndarray  # float, Eq 3 (+ the return leg if configured)
    comp_s: np.ndarray  # float, Eq 1
    energy_comp_j: np.ndarray  # float, Eq 4
    energy_trans_j: np.ndarray  # float, Eq 5
    busy_slots: np.ndarray  # int, slots the stage occupies its share
    carrier_slots: np.ndarray  # int, slots the subcarrier is occupied


@dataclass(frozen=True)
class Physics:
    """Constants of one episode used by the scheduler (built by the environment)."""

    num_layers: int
    share_levels: int
    slot_s: float
    deadline_s: float
    tx_power_w: float
    cum_cycles: np.ndarray  # (L+1,), prefix sums of C
    in_bits: np.ndarray  # (L,), bits to move before running layer i (input for i = 0)
    final_bits: float  # O^L, the result
    capacity_hz: np.ndarray  # (N+1,)
    k0_node: np.ndarray  # (N+1,), k0 charged on each node (Eq 4)
    link: np.ndarray  # (N+1, N+1) bool
    rate_bps: np.ndarray  # (N+1, N+1)
    return_result: bool
    slowest_rate_bps: float
    fail_on_conflict: bool = False
    relative_share: bool = False


def _empty_outcome(m: int) -> StageOutcome:
    z_i = np.zeros(m, dtype=np.int64)
    z_f = np.zeros(m)
    z_b = np.zeros(m, dtype=bool)
    return StageOutcome(
        started=z_b.copy(), failed=z_b.copy(), waiting=z_b.copy(), node=z_i - 1,
        first_layer=z_i.copy(), end_layer=z_i.copy(), level=z_i.copy(), carrier=z_i - 1,
        moving=z_b.copy(), trans_s=z_f.copy(), comp_s=z_f.copy(), energy_comp_j=z_f.copy(),
        energy_trans_j=z_f.copy(), busy_slots=z_i.copy(), carrier_slots=z_i.copy(),
    )


def _slots(duration_s, slot_s):
    """Slots a duration occupies: ceil(duration / slot), at least 1 (tolerant to rounding)."""
    return np.maximum(1, np.ceil(np.asarray(duration_s) / slot_s - 1e-9)).astype(np.int64)


def _relative_levels(ph: Physics, k, i, j, n, loc, moving, elapsed_s):
    """Share levels requested under ``share_action="relative"`` (vectorized; see module doc)."""
    lv = ph.share_levels
    L = ph.num_layers
    rate = ph.rate_bps[loc, n]
    trans = np.where(moving, ph.in_bits[i] / np.where(moving, rate, 1.0), 0.0)
    cyc_block = ph.cum_cycles[j + 1] - ph.cum_cycles[i]
    cyc_rest = ph.cum_cycles[L] - ph.cum_cycles[i]
    budget = (ph.deadline_s - elapsed_s - trans) * cyc_block / cyc_rest
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(budget > 0, np.ceil(lv * cyc_block / (ph.capacity_hz[n] * budget) - 1e-9), lv)
    need = np.clip(need, 1, lv)
    factor = 1.0 + np.clip(k, 0, lv - 1) / max(lv - 1, 1)
    return np.clip(np.ceil(need * factor - 1e-9), 1, lv).astype(np.int64)


def start_stages(ph: Physics, x: SlotInputs) -> StageOutcome:
    """Vectorized scheduling of one slot (see the module docstring for the rules)."""
    m = x.ready.shape[0]
    out = _empty_outcome(m)
    idx = np.flatnonzero(x.ready)  # row order = priority order
    if idx.size == 0:
        return out
    a = x.action[idx]
    loc = x.location[idx]
    i = x.next_layer[idx]
    L = ph.num_layers
    # 1. block end, clipped to [i, L-1] (constraint 9)
    j = np.clip(a[:, 1], i, L - 1)
    # 2. a node the data cannot reach directly -> stay where the data is
    n = np.clip(a[:, 0], 0, ph.capacity_hz.size - 1)
    repaired = ~ph.link[loc, n]
    n = np.where(ph.link[loc, n], n, loc)
    moving = n != loc
    # 3. subcarriers (constraint 7)
    carrier = np.full(idx.size, -1, dtype=np.int64)
    mv = np.flatnonzero(moving)
    if mv.size:
        s_total = x.carrier_free.size
        asked = np.clip(a[mv, 3], 0, s_total - 1)
        first = np.zeros(mv.size, dtype=bool)
        first[np.unique(asked, return_index=True)[1]] = True
        keep = first & x.carrier_free[asked]
        carrier[mv[keep]] = asked[keep]
        taken = np.zeros(s_total, dtype=bool)
        taken[asked[keep]] = True
        left = np.flatnonzero(x.carrier_free & ~taken)
        losers = mv[~keep]
        k = min(left.size, losers.size)
        carrier[losers[:k]] = left[:k]
        repaired[losers] = True
        stay = losers[k:]
        n[stay] = loc[stay]
        moving[stay] = False
    # 4. capacity (constraint 8): grant in row order per node
    if ph.relative_share:
        req = _relative_levels(ph, a[:, 2], i, j, n, loc, moving, x.elapsed_s[idx])
    else:
        req = np.clip(a[:, 2] + 1, 1, ph.share_levels)
    order = np.argsort(n, kind="stable")
    ns, rs = n[order], req[order]
    excl = np.cumsum(rs) - rs  # requested before, over all rows in node order
    starts = np.flatnonzero(np.r_[True, ns[1:] != ns[:-1]])
    group_base = np.repeat(excl[starts], np.diff(np.r_[starts, ns.size]))
    before = excl - group_base  # requested before this row on the same node
    granted_sorted = np.clip(x.free_levels[ns] - before, 0, rs)
    granted = np.empty_like(granted_sorted)
    granted[order] = granted_sorted
    waiting = granted <= 0
    moving &= ~waiting
    carrier[waiting] = -1
    # 5. durations, energies and the deadline (constraints 10)
    cycles = ph.cum_cycles[j + 1] - ph.cum_cycles[i]
    share_hz = np.where(waiting, 1.0, granted / ph.share_levels * ph.capacity_hz[n])
    comp = np.where(waiting, 0.0, cycles / share_hz)
    rate = ph.rate_bps[loc, n]
    trans = np.where(moving, ph.in_bits[i] / np.where(moving, rate, 1.0), 0.0)
    if ph.return_result:
        src = x.source[idx]
        final = (j == L - 1) & (n != src) & ~waiting
        back = np.where(ph.link[n, src], ph.rate_bps[n, src], ph.slowest_rate_bps)
        trans = trans + np.where(final, ph.final_bits / np.where(final, back, 1.0), 0.0)
    e_comp = np.where(waiting, 0.0, ph.k0_node[n] * cycles * share_hz**2)
    e_trans = ph.tx_power_w * trans
    fits = x.elapsed_s[idx] + trans + comp <= ph.deadline_s + 1e-9
    started = ~waiting & fits
    failed = ~waiting & ~fits
    if ph.fail_on_conflict:
        repaired |= granted < req
        failed = failed | repaired
        started &= ~repaired
        waiting &= ~repaired

    out.started[idx] = started
    out.failed[idx] = failed
    out.waiting[idx] = waiting
    out.node[idx] = np.where(started, n, -1)
    out.first_layer[idx] = i
    out.end_layer[idx] = j
    out.level[idx] = np.where(started, granted, 0)
    out.carrier[idx] = np.where(started & moving, carrier, -1)
    out.moving[idx] = started & moving
    out.trans_s[idx] = np.where(started, trans, 0.0)
    out.comp_s[idx] = np.where(started, comp, 0.0)
    out.energy_comp_j[idx] = np.where(started, e_comp, 0.0)
    out.energy_trans_j[idx] = np.where(started, e_trans, 0.0)
    out.busy_slots[idx] = np.where(started, _slots(trans + comp, ph.slot_s), 0)
    out.carrier_slots[idx] = np.where(started & moving, _slots(trans, ph.slot_s), 0)
    return out


def _relative_level_one(ph: Physics, k, i, j, n, loc, elapsed_s) -> int:
    """One task's requested level under ``share_action="relative"`` (the loop version)."""
    lv = ph.share_levels
    trans = float(ph.in_bits[i]) / float(ph.rate_bps[loc, n]) if n != loc else 0.0
    cyc_block = float(ph.cum_cycles[j + 1] - ph.cum_cycles[i])
    cyc_rest = float(ph.cum_cycles[ph.num_layers] - ph.cum_cycles[i])
    budget = (ph.deadline_s - elapsed_s - trans) * cyc_block / cyc_rest
    need = math.ceil(lv * cyc_block / (float(ph.capacity_hz[n]) * budget) - 1e-9) if budget > 0 else lv
    need = min(max(need, 1), lv)
    factor = 1.0 + min(max(k, 0), lv - 1) / max(lv - 1, 1)
    return min(max(math.ceil(need * factor - 1e-9), 1), lv)


def start_stages_reference(ph: Physics, x: SlotInputs) -> StageOutcome:
    """The same rules as :func:`start_stages`, written as a plain loop over tasks.

    This is the readable specification (and the "simple reference" of ``make bench``).
    """
    m = x.ready.shape[0]
    out = _empty_outcome(m)
    L = ph.num_layers
    s_total = x.carrier_free.size
    rows = [r for r in range(m) if x.ready[r]]
    plan = {}
    # pass 1: block, link, the subcarrier each mover asked for
    asked_by = {}
    for r in rows:
        act = x.action[r]
        loc = int(x.location[r])
        i = int(x.next_layer[r])
        j = min(max(int(act[1]), i), L - 1)
        n = min(max(int(act[0]), 0), ph.capacity_hz.size - 1)
        repaired = False
        if not ph.link[loc, n]:
            n = loc
            repaired = True
        c = -1
        if n != loc:
            want = min(max(int(act[3]), 0), s_total - 1)
            if x.carrier_free[want] and want not in asked_by:
                c = want
            asked_by.setdefault(want, r)
            repaired = repaired or c < 0
        plan[r] = [loc, i, j, n, c, repaired]
    # pass 2: movers that did not keep their choice take the lowest free subcarriers left
    taken = {p[4] for p in plan.values() if p[4] >= 0}
    for r in rows:
        loc, i, j, n, c, _ = plan[r]
        if n != loc and c < 0:
            free = [s for s in range(s_total) if x.carrier_free[s] and s not in taken]
            if free:
                plan[r][4] = free[0]
                taken.add(free[0])
            else:
                plan[r][3] = loc  # no subcarrier: compute where the data is
    # pass 3: capacity, then durations and the deadline
    left = {k: int(v) for k, v in enumerate(x.free_levels)}
    for r in rows:
        loc, i, j, n, c, repaired = plan[r]
        if ph.relative_share:
            req = _relative_level_one(ph, int(x.action[r][2]), i, j, n, loc, float(x.elapsed_s[r]))
        else:
            req = min(max(int(x.action[r][2]) + 1, 1), ph.share_levels)
        granted = max(0, min(req, left[n]))
        left[n] = max(0, left[n] - req)
        out.first_layer[r] = i
        out.end_layer[r] = j
        if ph.fail_on_conflict and (repaired or granted < req):
            out.failed[r] = True
            continue
        if granted == 0:
            out.waiting[r] = True
            continue
        moving = n != loc
        cycles = float(ph.cum_cycles[j + 1] - ph.cum_cycles[i])
        share_hz = granted / ph.share_levels * float(ph.capacity_hz[n])
        comp = cycles / share_hz
        trans = float(ph.in_bits[i]) / float(ph.rate_bps[loc, n]) if moving else 0.0
        if ph.return_result and j == L - 1 and n != int(x.source[r]):
            src = int(x.source[r])
            back = float(ph.rate_bps[n, src]) if ph.link[n, src] else ph.slowest_rate_bps
            trans += ph.final_bits / back
        if float(x.elapsed_s[r]) + trans + comp > ph.deadline_s + 1e-9:
            out.failed[r] = True
            continue
        out.started[r] = True
        out.node[r] = n
        out.level[r] = granted
        out.moving[r] = moving
        out.carrier[r] = c if moving else -1
        out.trans_s[r] = trans
        out.comp_s[r] = comp
        out.energy_comp_j[r] = float(ph.k0_node[n]) * cycles * share_hz**2
        out.energy_trans_j[r] = ph.tx_power_w * trans
        out.busy_slots[r] = max(1, math.ceil((trans + comp) / ph.slot_s - 1e-9))
        out.carrier_slots[r] = max(1, math.ceil(trans / ph.slot_s - 1e-9)) if moving else 0
    return out
