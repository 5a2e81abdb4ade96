"""Replay buffer D of compact transitions (s, a, r, s', done) with the action masks.

Explained in the book's chapter "Deep Q-learning on the graph"; used by :mod:`dcicore.dqn`
and :mod:`dcicore.cerl` (the shared pool of Algorithm 1).

Only what the Q-network and the TD target read is stored, in compact numpy arrays; a state is
rebuilt exactly when a minibatch is sampled:

* ``node_features`` as is (N+1, 6) float32;
* ``node_links`` once per distinct matrix (a scenario's links do not change within an episode),
  each transition keeping an index (reference-counted, freed when overwritten);
* ``task_features`` as four bit flags per task layer (done, running, pending, next) plus the
  task's slack and ready flag; the workload/output columns are the same for every state of a
  config and are stored once. :meth:`ReplayBuffer.add` checks that the observation is rebuilt
  exactly and raises ``ValueError`` otherwise;
* ``assignment``, ``task_location`` as small integers; the node and block masks bit-packed.

A full buffer overwrites its oldest transition. The action's block end is stored clipped to
[next layer, L-1], the environment's repair rule 1 (what the environment actually ran).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dcicore.graph import GraphBatch, build_graph
from dcicore.nets import BranchMasks, _masks_from_arrays

__all__ = ["ReplayBuffer", "Transitions"]

_FLAG_COLS = (2, 3, 4, 5)  # done, running, pending, next (columns of task_features)
_SLACK, _READY = 6, 7


@dataclass
class Transitions:
    """A minibatch of J transitions (what the TD target and the fitness read).

    ``graph``/``next_graph``: :class:`~dcicore.graph.GraphBatch` of s and s'; ``actions`` (J, M, 4)
    long (env format); ``rewards`` (J,) float32, unscaled Eq 13 rewards; ``dones`` (J,) float32
    (1 stops the bootstrap); ``ready`` (J, M) bool (tasks of s that were given an action);
    ``masks``/``next_masks``: :data:`~dcicore.nets.BranchMasks` of s and s'; ``indices`` (J,)
    positions in the buffer.
    """

    graph: GraphBatch
    next_graph: GraphBatch
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    ready: torch.Tensor
    masks: BranchMasks
    next_masks: BranchMasks
    indices: np.ndarray


class ReplayBuffer:
    """Ring buffer of at most ``capacity`` transitions; ``seed`` seeds its sampling generator."""

    def __init__(self, capacity: int, seed: int = 0):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.size = 0
        self.pos = 0
        self.arrays: dict | None = None
        self.static_task: np.ndarray | None = None  # (L, 2) workload, output per layer
        self._links: list = []  # distinct link matrices (None = free slot)
        self._links_ref: list = []
        self._links_key: dict = {}
        self._free_ids: list = []

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------ storage layout
    def _allocate(self, obs, masks) -> None:
        n1 = obs["node_features"].shape[0]
        M = obs["task_location"].shape[0]
        L = obs["task_features"].shape[0] // M
        S = obs["carrier_free"].shape[0]
        cap = self.capacity
        idt = np.int8 if n1 <= 127 else np.int16
        a = {}
        for p in ("s_", "n_"):
            a[p + "node_x"] = np.zeros((cap, n1, obs["node_features"].shape[1]), np.float32)
            a[p + "links"] = np.zeros(cap, np.int64)
            a[p + "flags"] = np.zeros((cap, M, L), np.uint8)
            a[p + "slack"] = np.zeros((cap, M), np.float32)
            a[p + "ready"] = np.zeros((cap, M), bool)
            a[p + "assign"] = np.zeros((cap, M, L), idt)
            a[p + "location"] = np.zeros((cap, M), idt)
            a[p + "m_node"] = np.zeros((cap, (M * n1 + 7) // 8), np.uint8)
            a[p + "m_block"] = np.zeros((cap, (M * L + 7) // 8), np.uint8)
            a[p + "m_level"] = np.zeros((cap, n1), np.int16)
            a[p + "m_carrier"] = np.zeros((cap, S), bool)
            a[p + "m_ready"] = np.zeros((cap, M), bool)
        a["action"] = np.zeros((cap, M, 4), np.int16)
        a["reward"] = np.zeros(cap, np.float32)
        a["done"] = np.zeros(cap, np.float32)
        self.arrays = a
        self.dims = dict(n1=n1, M=M, L=L, S=S)
        tf = obs["task_features"].reshape(M, L, -1)
        self.static_task = tf[0, :, :2].copy()

    def _link_id(self, links: np.ndarray) -> int:
        key = hash(links.tobytes())
        lid = self._links_key.get(key)
        if lid is not None and np.array_equal(self._links[lid], links):
            self._links_ref[lid] += 1
            return lid
        if self._free_ids:
            lid = self._free_ids.pop()
            self._links[lid] = links.copy()
            self._links_ref[lid] = 1
        else:
            lid = len(self._links)
            self._links.append(links.copy())
            self._links_ref.append(1)
        self._links_key[key] = lid
        return lid

    def _release(self, lid: int) -> None:
        self._links_ref[lid] -= 1
        if self._links_ref[lid] == 0:
            key = hash(self._links[lid].tobytes())
            if self._links_key.get(key) == lid:
                del self._links_key[key]
            self._links[lid] = None
            self._free_ids.append(lid)

    def _task_x(self, flags, slack, ready):
        """Rebuild task_features (…, M, L, 8) from the compact arrays."""
        shape = flags.shape
        tf = np.zeros(shape + (8,), np.float32)
        tf[..., :2] = self.static_task
        for bit, col in enumerate(_FLAG_COLS):
            tf[..., col] = (flags >> bit) & 1
        tf[..., _SLACK] = slack[..., None]
        tf[..., _READY] = ready[..., None]
        return tf

    def _put_state(self, p: str, i: int, obs, masks) -> None:
        a, d = self.arrays, self.dims
        M, L = d["M"], d["L"]
        tf = np.asarray(obs["task_features"]).reshape(M, L, -1)
        flags = np.zeros((M, L), np.uint8)
        for bit, col in enumerate(_FLAG_COLS):
            flags |= (tf[..., col] > 0.5).astype(np.uint8) << bit
        slack = tf[:, 0, _SLACK]
        ready_f = tf[:, 0, _READY] > 0.5
        if not np.array_equal(self._task_x(flags, slack, ready_f), tf):
            raise ValueError("task_features cannot be stored compactly: the layout of "
                             "dcicore.env.TASK_FEATURES changed; update dcicore.replay")
        a[p + "node_x"][i] = obs["node_features"]
        a[p + "links"][i] = self._link_id(np.asarray(obs["node_links"], np.float32))
        a[p + "flags"][i] = flags
        a[p + "slack"][i] = slack
        a[p + "ready"][i] = np.asarray(obs["task_ready"]).astype(bool)
        a[p + "assign"][i] = np.asarray(obs["assignment"]).reshape(M, L)
        a[p + "location"][i] = obs["task_location"]
        a[p + "m_node"][i] = np.packbits(np.asarray(masks["node"], bool).ravel())
        a[p + "m_block"][i] = np.packbits(np.asarray(masks["block"], bool).ravel())
        a[p + "m_level"][i] = masks["max_level"]
        a[p + "m_carrier"][i] = masks["carrier"]
        a[p + "m_ready"][i] = masks["ready"]

    def add(self, obs, action, reward, next_obs, done, masks, next_masks) -> None:
        """Store one transition. ``obs``/``next_obs`` are the environment's Dict observations,
        ``masks``/``next_masks`` its ``action_masks()`` for s and s', ``action`` (M, 4)."""
        if self.arrays is None:
            self._allocate(obs, masks)
        i = self.pos
        a = self.arrays
        if self.size == self.capacity:  # overwrite the oldest: release its link matrices
            self._release(int(a["s_links"][i]))
            self._release(int(a["n_links"][i]))
        self._put_state("s_", i, obs, masks)
        self._put_state("n_", i, next_obs, next_masks)
        act = np.asarray(action, dtype=np.int64).reshape(-1, 4).copy()
        L = self.dims["L"]
        nxt = np.asarray(obs["task_features"]).reshape(self.dims["M"], L, -1)[..., 5] > 0.5
        next_layer = np.where(nxt.any(-1), nxt.argmax(-1), 0)
        act[:, 1] = np.clip(np.maximum(act[:, 1], next_layer), 0, L - 1)
        a["action"][i] = act
        a["reward"][i] = reward
        a["done"][i] = float(done)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    # ------------------------------------------------------------------ sampling
    def _graph(self, p: str, idx) -> GraphBatch:
        a = self.arrays
        links = np.stack([self._links[j] for j in a[p + "links"][idx]])
        return build_graph(
            node_x=a[p + "node_x"][idx], links=links,
            task_x=self._task_x(a[p + "flags"][idx], a[p + "slack"][idx], a[p + "ready"][idx]),
            assign=a[p + "assign"][idx], location=a[p + "location"][idx], ready=a[p + "ready"][idx],
        )

    def _masks(self, p: str, idx) -> BranchMasks:
        a, d = self.arrays, self.dims
        n, M, n1, L = len(idx), d["M"], d["n1"], d["L"]
        node = np.unpackbits(a[p + "m_node"][idx], axis=1, count=M * n1).reshape(n, M, n1).astype(bool)
        block = np.unpackbits(a[p + "m_block"][idx], axis=1, count=M * L).reshape(n, M, L).astype(bool)
        return _masks_from_arrays(node, block, a[p + "m_level"][idx].astype(np.int64),
                                  a[p + "m_carrier"][idx], a[p + "m_ready"][idx])

    def get(self, idx) -> Transitions:
        """The transitions at buffer positions ``idx`` (a sequence of ints)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.size == 0 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.size:
            raise ValueError(f"indices must be in [0, {self.size}), got {idx!r}")
        a = self.arrays
        return Transitions(
            graph=self._graph("s_", idx), next_graph=self._graph("n_", idx),
            actions=torch.from_numpy(a["action"][idx].astype(np.int64)),
            rewards=torch.from_numpy(a["reward"][idx].copy()),
            dones=torch.from_numpy(a["done"][idx].copy()),
            ready=torch.from_numpy(a["s_ready"][idx] & (a["s_location"][idx] >= 0)),
            masks=self._masks("s_", idx), next_masks=self._masks("n_", idx), indices=idx,
        )

    def sample(self, n: int, rng=None) -> Transitions:
        """``n`` transitions drawn uniformly with replacement (``rng`` or the buffer's own)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        rng = self.rng if rng is None else rng
        return self.get(rng.integers(0, self.size, int(n)))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume, as torch tensors and Python values (loads with
        ``torch.load(weights_only=True)``)."""
        state = dict(capacity=self.capacity, size=self.size, pos=self.pos,
                     rng=self.rng.bit_generator.state)
        if self.arrays is None:
            return state
        used = sorted({int(j) for p in ("s_", "n_") for j in self.arrays[p + "links"][: self.size]})
        remap = {old: new for new, old in enumerate(used)}
        arrays = {}
        for key, arr in self.arrays.items():
            arr = arr[: self.size].copy()
            if key.endswith("links"):
                arr = np.array([remap[int(j)] for j in arr], dtype=np.int64)
            arrays[key] = torch.from_numpy(arr)
        state.update(
            arrays=arrays, dims=dict(self.dims), static_task=torch.from_numpy(self.static_task),
            links=torch.from_numpy(np.stack([self._links[j] for j in used])),
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a buffer saved by :meth:`state_dict`."""
        self.__init__(state["capacity"])
        self.rng.bit_generator.state = state["rng"]
        if "arrays" not in state:
            return
        self.dims = dict(state["dims"])
        self.static_task = state["static_task"].numpy().copy()
        size = int(state["size"])
        self.arrays = {}
        for key, t in state["arrays"].items():
            src = t.numpy()
            full = np.zeros((self.capacity,) + src.shape[1:], src.dtype)
            full[:size] = src
            self.arrays[key] = full
        links = state["links"].numpy()
        self._links = [links[j].copy() for j in range(links.shape[0])]
        self._links_ref = [0] * len(self._links)
        for p in ("s_", "n_"):
            for j in self.arrays[p + "links"][:size]:
                self._links_ref[int(j)] += 1
        self._links_key = {hash(m.tobytes()): j for j, m in enumerate(self._links)}
        self.size, self.pos = size, int(state["pos"])
