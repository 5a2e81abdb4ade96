"""Small, reusable experiment runners: baseline sweeps, episode traces, one-task plan tables.

Explained in the book's chapters "System cost and the optimisation problem" (one-task plans,
the size of the decision space, the repair of constraint violations) and "The DCI system in
time" (sweeps over N and λ, per-slot traces). Nothing in :mod:`dcicore` imports this module;
chapters and tests do.

Every result row carries ``config`` = :meth:`SystemConfig.to_dict` of the configuration that
produced it, so a stored number can always be traced back to its scenario.

Sweeps can be cached on disk (``cache="path/to/file.json"``). The cache is one JSON object
``{key: row}``; the key hashes the policy name, the full config, the episodes, the seed and
:data:`CACHE_VERSION`. It is written atomically (a temporary file in the same folder, then
``os.replace``), so a crash or a second process never leaves a half-written file behind.
Only policies given by *name* are cached: the behaviour of a callable cannot be hashed.
Edits to the environment's code do not change the key; bump :data:`CACHE_VERSION` (or delete
the file) when they change results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from dcicore.baselines import evaluate, make_policy
from dcicore.config import SystemConfig, check_range
from dcicore.costs import (
    compute_delay,
    compute_energy,
    system_cost,
    transmission_delay,
    transmission_energy,
)
from dcicore.profiles import profile_for

__all__ = [
    "CACHE_VERSION",
    "sweep_baselines",
    "pivot",
    "trace_episode",
    "decision_space",
    "single_task_plans",
    "pareto_mask",
    "best_plan",
    "repair_table",
    "scenario_from_positions",
]

#: bump when the environment or the baselines change in a way that changes results
CACHE_VERSION = 1

_METRICS = ("system_cost", "system_cost_std", "completion_rate", "collaborations", "energy_j",
            "delay_s", "cost_per_task")


# ------------------------------------------------------------------------------ sweeps
def _policy_name(policy) -> str:
    if isinstance(policy, str):
        return policy
    return str(getattr(policy, "name", None) or getattr(policy, "__name__", None)
               or type(policy).__name__)


def _cache_key(name: str, cfg: SystemConfig, episodes: int, seed: int) -> str:
    blob = json.dumps({"policy": name, "config": cfg.to_dict(), "episodes": episodes,
                       "seed": seed, "version": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"cache file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _write_cache(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically: a temporary file beside ``path``, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # NOTE: atomic on POSIX and Windows when on the same filesystem
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sweep_baselines(policies, num_devices_list, config: SystemConfig | None = None,
                    episodes: int = 3, seed: int = 0, cache=None, progress: bool = False,
                    **overrides) -> list[dict]:
    """Evaluate every policy at every device count N; one row per (policy, N).

    Parameters
    ----------
    policies : iterable of str or policy objects
        Names from :data:`dcicore.baselines.POLICIES` (``"LC"``, ``"EC"``, ``"Random"``,
        ``"Greedy"``) or callables ``f(env) -> action`` / objects with ``.act(env)``.
    num_devices_list : iterable of int
        The N values.
    config : SystemConfig, optional
        The base scenario (paper defaults when None); ``num_devices`` and ``overrides`` (any
        SystemConfig field, e.g. ``arrival_rate_hz=1.0``) replace its fields.
    episodes, seed : int
        Passed to :func:`dcicore.baselines.evaluate` (episodes use seeds seed..seed+episodes-1;
        every policy sees the same episodes).
    cache : str or Path, optional
        JSON file of cached rows (see the module docstring); None = no cache.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    list of dict, each with ``policy``, ``num_devices``, ``arrival_rate_hz``, ``episodes``,
    ``seed``, the metrics of ``evaluate`` (``system_cost``, ``system_cost_std``,
    ``completion_rate``, ``collaborations``, ``energy_j``, ``delay_s``, ``cost_per_task``),
    ``completions`` and ``failures`` (totals over the episodes), ``cached`` (bool) and
    ``config`` (the full :meth:`SystemConfig.to_dict`).
    """
    check_range("episodes", episodes, 1, None, integer=True)
    check_range("seed", seed, 0, None, integer=True)
    base = config if config is not None else SystemConfig()
    if not isinstance(base, SystemConfig):
        raise ValueError(f"config must be a SystemConfig or None, got {type(base).__name__}")
    policies = list(policies)
    ns = [int(n) for n in num_devices_list]
    for p in policies:
        make_policy(p)  # fail early on an unknown name
    path = Path(cache) if cache is not None else None
    store = _read_cache(path) if path is not None else {}
    dirty = False
    jobs = [(p, n) for p in policies for n in ns]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="sweep")
    rows = []
    for policy, n in jobs:
        cfg = replace(base, num_devices=n, **overrides)
        name = _policy_name(policy)
        key = _cache_key(name, cfg, episodes, seed) if isinstance(policy, str) else None
        if key is not None and key in store:
            row = dict(store[key], cached=True)
            rows.append(row)
            continue
        res = evaluate(policy, cfg, episodes=episodes, seed=seed)
        row = {"policy": name, "num_devices": n, "arrival_rate_hz": cfg.arrival_rate_hz,
               "episodes": episodes, "seed": seed}
        row.update({k: res[k] for k in _METRICS})
        row["completions"] = int(sum(e["completions"] for e in res["episodes"]))
        row["failures"] = int(sum(e["failures"] for e in res["episodes"]))
        row["config"] = cfg.to_dict()
        if key is not None:
            store[key] = row
            dirty = True
        rows.append(dict(row, cached=False))
    if path is not None and dirty:
        # re-read so that rows another process added meanwhile are kept
        merged = _read_cache(path)
        merged.update(store)
        _write_cache(path, merged)
    return rows


def pivot(rows, value: str, index: str = "num_devices", columns: str = "policy"):
    """Arrange sweep rows as a table: ``(index_values, column_values, array (len(index), len(columns)))``.

    Missing cells are NaN; index and column values keep their first-seen order.
    """
    idx, cols = [], []
    for r in rows:
        if r[index] not in idx:
            idx.append(r[index])
        if r[columns] not in cols:
            cols.append(r[columns])
    table = np.full((len(idx), len(cols)), np.nan)
    for r in rows:
        table[idx.index(r[index]), cols.index(r[columns])] = r[value]
    return idx, cols, table


# ------------------------------------------------------------------------------ one episode
def trace_episode(policy, config: SystemConfig | None = None, seed: int = 0) -> dict:
    """Run one episode and keep what happens in every slot (the data of the paper's Fig 5).

    Returns a dict of numpy arrays over the T = ``episode_slots`` slots: ``free_before`` and
    ``free_after`` (T, N+1), the free share of each node before and after the slot's
    decisions (background load and running stages removed; fraction of capacity);
    ``background`` (T, N+1); ``cost``, ``reward``, ``energy_j``, ``delay_s`` (T,);
    ``arrivals``, ``completions``, ``failures``, ``collaborations``, ``stages``,
    ``active_tasks`` (T,) ints; ``constraints_ok`` (T,) bool; plus the scenario's
    ``positions_m`` (N+1, 2), ``capacity_hz`` (N+1,), ``link`` (N+1, N+1) and ``config``.
    """
    from dcicore.env import DCIEnv

    config = config if config is not None else SystemConfig()
    fn = make_policy(policy, seed)
    if hasattr(fn, "reset"):
        fn.reset(seed)
    env = DCIEnv(config)
    env.reset(seed=seed)
    keys = ("cost", "energy_j", "delay_s", "arrivals", "completions", "failures",
            "collaborations", "stages", "constraints_ok")
    out = {k: [] for k in keys}
    out.update(free_before=[], free_after=[], background=[], active_tasks=[], reward=[])
    truncated = False
    while not truncated:
        out["background"].append(env.background.copy())
        out["active_tasks"].append(int(env.active.sum()))
        _, reward, _, truncated, info = env.step(fn(env))
        out["reward"].append(reward)
        out["free_before"].append(info["free_share_before"])
        out["free_after"].append(info["free_share_after"])
        for k in keys:
            out[k].append(info[k])
    res = {k: np.asarray(v) for k, v in out.items()}
    sc = env.scenario
    res.update(positions_m=np.array(sc.positions_m), capacity_hz=np.array(sc.capacity_hz),
               link=np.array(sc.link), config=config.to_dict())
    return res


# ------------------------------------------------------------------------------ problem size
def decision_space(config: SystemConfig | None = None) -> dict:
    """Size of P1's decision space, counted on the environment's discretisation.

    One ready task in one slot chooses a node (N+1), a block end (L), a share level and a
    subcarrier (S): ``per_task`` = (N+1)·L·levels·S choices. All M = N·K task rows decide
    together, so one slot has per_task^M joint actions, and an episode of T slots
    per_task^(M·T) decision sequences (an upper bound: ready rows only, and repairs merge
    many). Large counts are returned as log10.
    """
    c = config if config is not None else SystemConfig()
    per_task = c.num_nodes * c.num_layers * c.share_levels * c.num_subcarriers
    log_task = math.log10(per_task)
    return {
        "num_devices": c.num_devices,
        "per_task": per_task,
        "log10_per_slot": c.max_tasks * log_task,
        "log10_per_episode": c.max_tasks * c.episode_slots * log_task,
        "integer_variables_per_slot": c.max_tasks * 4,
    }


# ------------------------------------------------------------------------------ one task, one split
def single_task_plans(config: SystemConfig, scenario, source: int, shares=None) -> dict:
    """Every two-stage plan of one task alone in the system, with its delay and energy.

    A plan runs the first ``split`` layers (0..L) on the source ED at a share ``share_local``
    of its capacity, sends the intermediate data once over a free subcarrier of the link
    source -> ``node`` and runs the remaining L - split layers there at ``share_remote``.
    ``split == L`` is all-local (one plan per local share); ``split == 0`` sends the raw input
    (one plan per remote share). The node is any node other than the source that the source
    reaches directly. Time is continuous here (no slot rounding) and the task has every node
    to itself (no background load): the pure trade-off of Eqs 1–6.

    Parameters
    ----------
    config : SystemConfig (k0, mec_k0, p, deadline T).
    scenario : :class:`dcicore.scenario.Scenario` (capacities, links, per-subcarrier rates).
    source : int, the ED (1..N) that owns the task.
    shares : 1-D array of fractions in (0, 1], optional. Default: every level 1/levels..1.

    Returns
    -------
    dict of 1-D arrays (one entry per plan): ``split``, ``node`` (= source for all-local),
    ``share_local``, ``share_remote`` (0 where the stage is empty), ``delay_s`` (Eqs 1+3),
    ``energy_j`` (Eqs 4+5), ``feasible`` (delay <= T, constraint 10); and the scalars
    ``source``, ``deadline_s``.
    """
    c = config
    if not 1 <= int(source) <= c.num_devices:
        raise ValueError(f"source must be an ED index in [1, {c.num_devices}], got {source!r}")
    prof = profile_for(c)
    L = c.num_layers
    shares = (np.arange(1, c.share_levels + 1) / c.share_levels if shares is None
              else np.asarray(shares, dtype=float))
    if shares.ndim != 1 or shares.size == 0 or np.any((shares <= 0) | (shares > 1)):
        raise ValueError(f"shares must be a non-empty 1-D array of fractions in (0, 1], got {shares!r}")
    cap = np.asarray(scenario.capacity_hz, dtype=float)
    k0 = np.full(cap.size, c.k0)
    k0[0] = c.mec_k0
    cum = np.concatenate([[0.0], np.cumsum(prof.workload_cycles)])
    bits_before = np.concatenate([[prof.input_bits], prof.output_bits[:-1]])  # data entering layer i
    s = int(source)
    helpers = [n for n in range(cap.size) if n != s and scenario.link[s, n]]
    cols = {k: [] for k in ("split", "node", "share_local", "share_remote", "delay_s", "energy_j")}

    def add(split, node, a, b, delay, energy):
        size = np.broadcast(a, b, delay).shape
        for key, val in (("split", split), ("node", node), ("share_local", a), ("share_remote", b),
                         ("delay_s", delay), ("energy_j", energy)):
            cols[key].append(np.broadcast_to(val, size).ravel())

    # all local: L layers on the source
    r_loc = shares * cap[s]
    add(L, s, shares, 0.0, compute_delay(cum[L], r_loc), compute_energy(k0[s], cum[L], r_loc))
    for split in range(L):
        c_loc, c_rem = cum[split], cum[L] - cum[split]
        a = shares[:, None] if split > 0 else np.array([[0.0]])
        for n in helpers:
            rate = float(scenario.rate_bps[s, n])
            t_tx = transmission_delay(bits_before[split], rate)
            e_tx = transmission_energy(c.tx_power_w, bits_before[split], rate)
            b = shares[None, :]
            r_a = np.where(a > 0, a, 1.0) * cap[s]
            r_b = b * cap[n]
            d_loc = np.where(a > 0, compute_delay(c_loc, r_a), 0.0)
            e_loc = np.where(a > 0, compute_energy(k0[s], c_loc, r_a), 0.0)
            delay = d_loc + t_tx + compute_delay(c_rem, r_b)
            energy = e_loc + e_tx + compute_energy(k0[n], c_rem, r_b)
            add(split, n, a, b, delay, energy)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["split"] = out["split"].astype(np.int64)
    out["node"] = out["node"].astype(np.int64)
    out["feasible"] = out["delay_s"] <= c.deadline_s + 1e-9
    out["source"] = s
    out["deadline_s"] = c.deadline_s
    return out


def pareto_mask(delay, energy) -> np.ndarray:
    """True for the plans no other plan beats on both delay and energy (both minimised).

    Ties: of several identical (delay, energy) points one is kept.
    """
    delay = np.asarray(delay, dtype=float)
    energy = np.asarray(energy, dtype=float)
    order = np.lexsort((energy, delay))  # by delay, then energy
    best_e = np.minimum.accumulate(energy[order])
    prev = np.r_[np.inf, best_e[:-1]]
    keep_sorted = energy[order] < prev
    mask = np.zeros(delay.size, dtype=bool)
    mask[order[keep_sorted]] = True
    return mask


def best_plan(plans: dict, w_energy: float, w_delay: float) -> dict:
    """The feasible plan of least Eq 6 cost ω_e·E + ω_d·D (ties: the first in table order).

    Returns a dict with ``index``, ``split``, ``node``, ``share_local``, ``share_remote``,
    ``delay_s``, ``energy_j``, ``cost``; raises ``ValueError`` if no plan meets the deadline.
    """
    cost = system_cost(plans["energy_j"], plans["delay_s"], w_energy, w_delay)
    cost = np.where(plans["feasible"], cost, np.inf)
    k = int(np.argmin(cost))
    if not np.isfinite(cost[k]):
        raise ValueError("no plan meets the deadline (constraint 10) for this task")
    out = {key: plans[key][k].item() for key in
           ("split", "node", "share_local", "share_remote", "delay_s", "energy_j")}
    out.update(index=k, cost=float(cost[k]))
    return out


# ------------------------------------------------------------------------------ repairs
def scenario_from_positions(config: SystemConfig, positions_m, capacity_hz):
    """A hand-placed :class:`~dcicore.scenario.Scenario` (node 0 = the MEC): the same as
    :func:`dcicore.scenario.scenario_from`, kept under this name for chapter 3.

    Pass it to ``env.reset(options={"scenario": ...})`` for a toy instance.
    """
    from dcicore.scenario import scenario_from

    return scenario_from(config, positions_m, capacity_hz)


def repair_table(env, action) -> list[dict]:
    """What the environment would do with ``action`` in the current slot, row by row.

    Runs the slot's scheduler (:func:`dcicore.schedule.start_stages`) on a copy of the inputs,
    without stepping the environment. One dict per ready task row: the requested
    ``node``/``block_end``/``level``/``carrier`` beside the ``granted_*`` values after the
    repairs for constraints 7–10, and ``outcome`` in {"started", "waiting", "failed"}.
    """
    from dcicore.schedule import SlotInputs, start_stages

    c = env.config
    action = np.asarray(action, dtype=np.int64).reshape(env.num_rows, 4)
    ready = env.ready_mask()
    x = SlotInputs(
        ready=ready, next_layer=env.next_layer.copy(), location=env.location.copy(),
        source=env.row_source, elapsed_s=(env.t - env.arrival_slot) * c.slot_s,
        free_levels=env.free_levels(), carrier_free=env.carrier_busy == 0, action=action,
    )
    out = start_stages(env.physics, x)
    rows = []
    for r in np.flatnonzero(ready):
        outcome = "started" if out.started[r] else ("failed" if out.failed[r] else "waiting")
        rows.append({
            "row": int(r), "source": int(env.row_source[r]), "at": int(env.location[r]),
            "first_layer": int(env.next_layer[r]),
            "node": int(action[r, 0]), "block_end": int(action[r, 1]),
            "level": int(action[r, 2]) + 1, "carrier": int(action[r, 3]),
            "granted_node": int(out.node[r]), "granted_block_end": int(out.end_layer[r]),
            "granted_level": int(out.level[r]), "granted_carrier": int(out.carrier[r]),
            "delay_s": float(out.comp_s[r] + out.trans_s[r]),
            "outcome": outcome,
        })
    return rows
