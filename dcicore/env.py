"""The DCI environment, ``dcicore/DCI-v0``: N EDs and one MEC server co-infer an 8-layer DNN.

Explained in the book's chapters "The DCI system in time" and "The MDP".

### Description
Tasks arrive at every ED as a Poisson process. Each slot (``slot_s`` seconds) every *ready*
task (arrived, not finished, not busy with a running stage) receives one action: the node d
that runs its next block of layers, the block end j, the share r of that node's capacity
(1..100 %) and the subcarrier w used if its data must move (Eq 12). A stage occupies its share
for ceil(duration / slot) slots. A task completes when its last layer is done before the
deadline T; it fails when a stage cannot end by then, or on arrival when its ED already holds
``max_tasks_per_device`` tasks.

### Action space
``MultiDiscrete`` of shape (M, 4), M = N·max_tasks_per_device task rows (row r belongs to ED
``r // max_tasks_per_device + 1``); columns: node (0..N), block end (0..L-1), share level - 1
(0..99), subcarrier (0..S-1). Rows that are not ready are ignored. Invalid parts are repaired
(see :mod:`dcicore.schedule`); :meth:`DCIEnv.action_masks` gives the masks an agent can use
to avoid repairs.

### Observation space (the graph state S = (V_α, V_β, E_α, E_β, E_αβ), Sec 3.1)
``Dict`` of:

* ``node_features`` (N+1, 6): V_α, per computing node: capacity / MEC capacity, free share,
  background load, is-MEC flag, x / area, y / area.
* ``node_links`` (N+1, N+1): E_α, spectral efficiency log2(1+g·p/δ²)/32 of each link, 0 = no link.
* ``task_features`` (M·L, 8): V_β, per task layer: workload / max workload, output bits /
  input bits, done, running, pending, next-to-run, task slack (time left / T), task ready.
* ``layer_edges`` (2, M·(L-1)): E_β, layer l -> l+1 of every task row (static).
* ``assignment`` (M·L,): E_αβ, the node that ran / runs each task layer, -1 if none yet.
* ``task_location`` (M,): node holding each task's data, -1 for an empty row.
* ``task_ready`` (M,): 1 where the row needs an action this slot.
* ``carrier_free`` (S,): 1 where the subcarrier is free this slot.

### Rewards
Eq 13: −Σ over stages started in the slot of [ω_e(E^Comp+E^Trans) + ω_d(T^Comp+T^Trans)]
− P × (tasks failed in the slot).

### Episode end
Truncated after ``episode_slots`` slots; never terminated.

### Info
``energy_j``, ``delay_s``, ``cost`` (Eq 6 part), ``completions``, ``failures``,
``collaborations`` (stages that moved data to another node), ``arrivals``, ``dropped``,
``free_share_before`` and ``free_share_after`` (N+1,) (remaining resources per node, Fig 5),
``constraints_ok`` (7–10 checked on this slot's allocations).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dcicore.config import SystemConfig
from dcicore.costs import check_capacity, check_subcarriers, system_cost
from dcicore.profiles import profile_for
from dcicore.scenario import draw_arrivals, draw_background, make_scenario
from dcicore.schedule import Physics, SlotInputs, start_stages, start_stages_reference

__all__ = ["DCIEnv", "NODE_FEATURES", "TASK_FEATURES"]

NODE_FEATURES = ("capacity", "free_share", "background", "is_mec", "x", "y")
TASK_FEATURES = ("workload", "output", "done", "running", "pending", "next", "slack", "ready")


class DCIEnv(gym.Env):
    """Gymnasium environment of the DCI system (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, config: SystemConfig | None = None, reference: bool = False):
        self.config = config = config if config is not None else SystemConfig()
        if not isinstance(config, SystemConfig):
            raise ValueError(f"config must be a SystemConfig, got {type(config).__name__}")
        #: use the plain per-task loop (the specification) instead of the vectorized scheduler
        self.reference = bool(reference)
        self.profile = profile_for(config)
        n1, L, M, S = config.num_nodes, config.num_layers, config.max_tasks, config.num_subcarriers
        self.num_rows = M
        self.action_space = spaces.MultiDiscrete(
            np.tile(np.array([n1, L, config.share_levels, S], dtype=np.int64), (M, 1))
        )
        self.observation_space = spaces.Dict(
            {
                "node_features": spaces.Box(0.0, 1.0, (n1, len(NODE_FEATURES)), np.float32),
                "node_links": spaces.Box(0.0, 1.0, (n1, n1), np.float32),
                "task_features": spaces.Box(0.0, 1.0, (M * L, len(TASK_FEATURES)), np.float32),
                "layer_edges": spaces.Box(0, M * L - 1, (2, M * (L - 1)), np.int64),
                "assignment": spaces.Box(-1, n1 - 1, (M * L,), np.int64),
                "task_location": spaces.Box(-1, n1 - 1, (M,), np.int64),
                "task_ready": spaces.Box(0, 1, (M,), np.int8),
                "carrier_free": spaces.Box(0, 1, (S,), np.int8),
            }
        )
        # static pieces
        self.row_source = np.repeat(np.arange(1, n1), config.max_tasks_per_device)
        base = np.arange(M)[:, None] * L
        self.layer_edges = np.stack(
            [(base + np.arange(L - 1)).ravel(), (base + np.arange(1, L)).ravel()]
        ).astype(np.int64)
        wl = self.profile.workload_cycles
        self._layer_workload = np.tile((wl / wl.max()).astype(np.float32), M)
        self._layer_output = np.tile(
            np.minimum(self.profile.output_bits / self.profile.input_bits, 1.0).astype(np.float32), M
        )
        cum = np.concatenate([[0.0], np.cumsum(wl)])
        in_bits = np.concatenate([[self.profile.input_bits], self.profile.output_bits[:-1]])
        self._cum_cycles, self._in_bits = cum, in_bits
        self.scenario = None
        self.t = 0

    # ------------------------------------------------------------------ reset / step
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        c = self.config
        rng = self.np_random
        options = dict(options or {})
        unknown = set(options) - {"scenario", "initial_tasks"}
        if unknown:
            raise ValueError(f"reset options must be among 'scenario', 'initial_tasks', got {sorted(unknown)}")
        # a given scenario (e.g. a hand-built toy instance) replaces the random draw
        self.scenario = options.get("scenario") or make_scenario(c, rng)
        k0_node = np.full(c.num_nodes, c.k0)
        k0_node[0] = c.mec_k0
        rates = self.scenario.rate_bps[self.scenario.rate_bps > 0]
        self.physics = Physics(
            num_layers=c.num_layers, share_levels=c.share_levels, slot_s=c.slot_s,
            deadline_s=c.deadline_s, tx_power_w=c.tx_power_w, cum_cycles=self._cum_cycles,
            in_bits=self._in_bits, final_bits=float(self.profile.output_bits[-1]),
            capacity_hz=self.scenario.capacity_hz, k0_node=k0_node, link=self.scenario.link,
            rate_bps=self.scenario.rate_bps, return_result=c.return_result,
            slowest_rate_bps=float(rates.min()) if rates.size else 1.0,
            fail_on_conflict=c.conflict_rule == "fail",
            relative_share=c.share_action == "relative",
        )
        M, L = c.max_tasks, c.num_layers
        self.t = 0
        self.active = np.zeros(M, dtype=bool)
        self.next_layer = np.zeros(M, dtype=np.int64)
        self.location = np.full(M, -1, dtype=np.int64)
        self.arrival_slot = np.zeros(M, dtype=np.int64)
        self.busy = np.zeros(M, dtype=np.int64)
        self.stage_node = np.full(M, -1, dtype=np.int64)
        self.stage_level = np.zeros(M, dtype=np.int64)
        self.stage_first = np.zeros(M, dtype=np.int64)
        self.layer_node = np.full((M, L), -1, dtype=np.int64)
        self.carrier_busy = np.zeros(c.num_subcarriers, dtype=np.int64)
        self.background = draw_background(c, rng)
        self.totals = dict(arrivals=0, completions=0, failures=0, dropped=0)
        first = draw_arrivals(c, rng)
        if options.get("initial_tasks") is not None:
            first = np.asarray(options["initial_tasks"], dtype=np.int64)
            if first.shape != (c.num_devices,) or np.any(first < 0):
                raise ValueError(
                    f"initial_tasks must be {c.num_devices} non-negative task counts (one per ED), got {first!r}"
                )
        arrivals, dropped = self._admit(first)
        self.totals["arrivals"] += arrivals
        self.totals["dropped"] += dropped
        self.totals["failures"] += dropped
        self._initial_failures = dropped
        return self._observe(), {"arrivals": arrivals, "dropped": dropped}

    def step(self, action):
        c = self.config
        action = np.asarray(action, dtype=np.int64).reshape(self.num_rows, 4)
        ready = self.ready_mask()
        free_before = self.free_levels()
        x = SlotInputs(
            ready=ready, next_layer=self.next_layer, location=self.location,
            source=self.row_source, elapsed_s=(self.t - self.arrival_slot) * c.slot_s,
            free_levels=free_before, carrier_free=self.carrier_busy == 0, action=action,
        )
        out = (start_stages_reference if self.reference else start_stages)(self.physics, x)
        #: the slot's per-row outcome and the rows' elapsed time at its start (for inspection)
        self.last_outcome, self.last_elapsed_s = out, x.elapsed_s.copy()
        st = out.started
        # --- constraints 7 and 8 on everything in force this slot (checked, never assumed)
        running = self.busy > 0
        alloc_nodes = np.concatenate([self.stage_node[running], out.node[st]])
        alloc_levels = np.concatenate([self.stage_level[running], out.level[st]])
        ok7 = check_subcarriers(out.carrier[out.moving], np.ones(int(out.moving.sum()), bool)) and not np.any(
            self.carrier_busy[out.carrier[out.moving]] > 0
        )
        # 8: all allocations in force fit in each node's capacity, and this slot's new grants fit
        # in what the background load and running stages left free
        ok8 = check_capacity(alloc_nodes, alloc_levels, c.share_levels) and check_capacity(
            out.node[st], out.level[st], np.r_[free_before, 0][: c.num_nodes]
        )
        # --- apply the started stages
        self.busy[st] = out.busy_slots[st]
        self.stage_node[st] = out.node[st]
        self.stage_level[st] = out.level[st]
        self.stage_first[st] = out.first_layer[st]
        self.location[st] = out.node[st]
        L = c.num_layers
        layers = np.arange(L)
        in_block = (layers >= out.first_layer[:, None]) & (layers <= out.end_layer[:, None]) & st[:, None]
        self.layer_node = np.where(in_block, out.node[:, None], self.layer_node)
        finishing = st & (out.end_layer == L - 1)
        self.next_layer[st] = out.end_layer[st] + 1
        mv = out.moving
        self.carrier_busy[out.carrier[mv]] = out.carrier_slots[mv]
        energy = float(out.energy_comp_j.sum() + out.energy_trans_j.sum())
        delay = float(out.comp_s.sum() + out.trans_s.sum())
        completions = int(finishing.sum())
        failed_now = out.failed
        # failed tasks leave the table now
        self._clear(failed_now)
        free_after = self.free_levels()
        # --- time advances one slot
        self.t += 1
        self.busy = np.maximum(self.busy - 1, 0)
        self.carrier_busy = np.maximum(self.carrier_busy - 1, 0)
        done_rows = self.active & (self.busy == 0) & (self.next_layer >= L)
        self._clear(done_rows)
        self.stage_node[self.busy == 0] = -1
        self.stage_level[self.busy == 0] = 0
        # ready tasks whose deadline has passed fail
        late = self.ready_mask() & ((self.t - self.arrival_slot) * c.slot_s >= c.deadline_s - 1e-9)
        self._clear(late)
        self.background = draw_background(c, self.np_random)
        arrivals, dropped = self._admit(draw_arrivals(c, self.np_random))
        failures = int(failed_now.sum() + late.sum() + dropped)
        self.totals["arrivals"] += arrivals
        self.totals["completions"] += completions
        self.totals["failures"] += failures
        self.totals["dropped"] += dropped
        cost = float(system_cost(energy, delay, c.w_energy, c.w_delay))
        reward = -cost - c.penalty * failures  # Eq 13
        lv = c.share_levels
        info = {
            "energy_j": energy,
            "delay_s": delay,
            "cost": cost,
            "completions": completions,
            "failures": failures,
            "collaborations": int(mv.sum()),
            "arrivals": arrivals,
            "dropped": dropped,
            "stages": int(st.sum()),
            "free_share_before": free_before / lv,
            "free_share_after": free_after / lv,
            "constraints_ok": bool(ok7 and ok8),
        }
        truncated = self.t >= c.episode_slots
        return self._observe(), reward, False, truncated, info

    # ------------------------------------------------------------------ helpers
    def stage_level_sum(self) -> np.ndarray:
        """Share levels reserved by running stages on each node, shape (N+1,)."""
        running = self.busy > 0
        return np.bincount(self.stage_node[running], weights=self.stage_level[running],
                           minlength=self.config.num_nodes)

    def free_levels(self) -> np.ndarray:
        """Share levels still free on each node this slot: capacity − background − reserved."""
        c = self.config
        cap = np.floor(c.share_levels * (1.0 - self.background) + 1e-9)
        return np.maximum(cap - self.stage_level_sum(), 0).astype(np.int64)

    def ready_mask(self) -> np.ndarray:
        """Rows that need an action this slot, shape (M,)."""
        return self.active & (self.busy == 0) & (self.next_layer < self.config.num_layers)

    def time_left_s(self) -> np.ndarray:
        """Seconds left before each row's deadline at the start of this slot, shape (M,)."""
        c = self.config
        return np.where(self.active, c.deadline_s - (self.t - self.arrival_slot) * c.slot_s, 0.0)

    def _clear(self, rows: np.ndarray) -> None:
        self.active[rows] = False
        self.busy[rows] = 0
        self.location[rows] = -1
        self.next_layer[rows] = 0
        self.stage_node[rows] = -1
        self.stage_level[rows] = 0
        self.layer_node[rows] = -1

    def _admit(self, counts: np.ndarray):
        """Place new tasks in free rows of their ED; the overflow is dropped (counted as failed)."""
        K = self.config.max_tasks_per_device
        free = ~self.active.reshape(-1, K)  # (N, K)
        # rank of each free slot within its ED: admit the first `counts` free rows
        rank = np.cumsum(free, axis=1) - 1
        admit = free & (rank < counts[:, None])
        rows = np.flatnonzero(admit.ravel())
        self.active[rows] = True
        self.next_layer[rows] = 0
        self.location[rows] = self.row_source[rows]
        self.arrival_slot[rows] = self.t
        self.busy[rows] = 0
        self.layer_node[rows] = -1
        admitted = int(rows.size)
        dropped = int(counts.sum()) - admitted
        return admitted, dropped

    def _observe(self) -> dict:
        if self.reference:
            return self._observe_reference()
        c = self.config
        sc = self.scenario
        M, L, n1 = c.max_tasks, c.num_layers, c.num_nodes
        free = self.free_levels() / c.share_levels
        node_x = np.empty((n1, len(NODE_FEATURES)), dtype=np.float32)
        node_x[:, 0] = sc.capacity_hz / c.mec_capacity_hz
        node_x[:, 1] = free
        node_x[:, 2] = self.background
        node_x[:, 3] = 0.0
        node_x[0, 3] = 1.0
        node_x[:, 4:6] = sc.positions_m / c.area_m
        np.clip(node_x, 0.0, 1.0, out=node_x)
        links = (np.log2(1.0 + self._snr()) / 32.0) * (sc.link & ~np.eye(n1, dtype=bool))
        ready = self.ready_mask()
        running = self.active & (self.busy > 0)
        layer_idx = np.arange(L)
        nl = self.next_layer[:, None]
        act = self.active[:, None]
        run = running[:, None] & (layer_idx >= self.stage_first[:, None]) & (layer_idx < nl)
        done = act & (layer_idx < nl) & ~run
        pending = act & (layer_idx >= nl)
        nxt = act & (layer_idx == nl)
        slack = np.clip(self.time_left_s() / c.deadline_s, 0.0, 1.0)
        tf = np.empty((M, L, len(TASK_FEATURES)), dtype=np.float32)
        tf[..., 0] = self._layer_workload.reshape(M, L)
        tf[..., 1] = self._layer_output.reshape(M, L)
        tf[..., 2] = done
        tf[..., 3] = run
        tf[..., 4] = pending
        tf[..., 5] = nxt
        tf[..., 6] = (slack[:, None] * act)
        tf[..., 7] = ready[:, None]
        return {
            "node_features": node_x,
            "node_links": np.clip(links, 0.0, 1.0).astype(np.float32),
            "task_features": tf.reshape(M * L, -1),
            "layer_edges": self.layer_edges.copy(),
            "assignment": self.layer_node.reshape(-1).copy(),
            "task_location": self.location.copy(),
            "task_ready": ready.astype(np.int8),
            "carrier_free": (self.carrier_busy == 0).astype(np.int8),
        }

    def _observe_reference(self) -> dict:
        """The observation built with plain loops over nodes, tasks and layers (the specification
        of :meth:`_observe`, and the simple reference of ``make bench``)."""
        c = self.config
        sc = self.scenario
        M, L, n1 = c.max_tasks, c.num_layers, c.num_nodes
        free = self.free_levels()
        snr = self._snr()
        node_x = np.zeros((n1, len(NODE_FEATURES)), dtype=np.float32)
        links = np.zeros((n1, n1), dtype=np.float32)
        for n in range(n1):
            node_x[n] = [
                min(sc.capacity_hz[n] / c.mec_capacity_hz, 1.0), free[n] / c.share_levels,
                self.background[n], 1.0 if n == 0 else 0.0,
                min(max(sc.positions_m[n, 0] / c.area_m, 0.0), 1.0),
                min(max(sc.positions_m[n, 1] / c.area_m, 0.0), 1.0),
            ]
            for m in range(n1):
                if m != n and sc.link[n, m]:
                    links[n, m] = min(math.log2(1.0 + snr[n, m]) / 32.0, 1.0)
        wl = self.profile.workload_cycles
        tf = np.zeros((M * L, len(TASK_FEATURES)), dtype=np.float32)
        ready = self.ready_mask()
        for r in range(M):
            active = bool(self.active[r])
            running = active and self.busy[r] > 0
            left = c.deadline_s - (self.t - self.arrival_slot[r]) * c.slot_s if active else 0.0
            slack = min(max(left / c.deadline_s, 0.0), 1.0) if active else 0.0
            for layer in range(L):
                nl = self.next_layer[r]
                is_run = running and self.stage_first[r] <= layer < nl
                tf[r * L + layer] = [
                    wl[layer] / wl.max(),
                    min(self.profile.output_bits[layer] / self.profile.input_bits, 1.0),
                    active and layer < nl and not is_run, is_run, active and layer >= nl,
                    active and layer == nl, slack, ready[r],
                ]
        return {
            "node_features": node_x,
            "node_links": links,
            "task_features": tf,
            "layer_edges": self.layer_edges.copy(),
            "assignment": self.layer_node.reshape(-1).copy(),
            "task_location": self.location.copy(),
            "task_ready": ready.astype(np.int8),
            "carrier_free": (self.carrier_busy == 0).astype(np.int8),
        }

    def _snr(self) -> np.ndarray:
        if not hasattr(self, "_snr_cache") or self._snr_cache[0] is not self.scenario:
            from dcicore.costs import channel_gain

            c = self.config
            g = channel_gain(self.scenario.distance_m, c.path_loss_exponent, c.min_distance_m)
            self._snr_cache = (self.scenario, g * c.tx_power_w / c.noise_w)
        return self._snr_cache[1]

    # ------------------------------------------------------------------ masks for agents
    def action_masks(self) -> dict:
        """Masks an agent can apply before choosing, so that repairs are not needed.

        Returns a dict of boolean arrays: ``node`` (M, N+1): reachable from the task's data and
        with free capacity; ``block`` (M, L): j >= next layer; ``max_level`` (N+1,): free share
        levels per node (with ``share_action="relative"`` every share index is valid, so it is
        ``share_levels`` for every node: the index is not a level there); ``carrier`` (S,): free
        subcarriers; ``ready`` (M,).
        """
        c = self.config
        ready = self.ready_mask()
        loc = np.where(self.location >= 0, self.location, 0)
        free = self.free_levels()
        node = self.scenario.link[loc] & (free > 0)[None, :] & ready[:, None]
        block = (np.arange(c.num_layers)[None, :] >= self.next_layer[:, None]) & ready[:, None]
        if c.share_action == "relative":
            free = np.full_like(free, c.share_levels)
        return {
            "node": node,
            "block": block,
            "max_level": free,
            "carrier": self.carrier_busy == 0,
            "ready": ready,
        }
