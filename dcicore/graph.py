"""Observation -> graph tensors: the state graph S = (V_α, V_β, E_α, E_β, E_αβ) of Sec 3.1.

Explained in the book's chapter "The graph state and the GCN Q-network"; used by
:mod:`dcicore.nets` (the GCN Q-network) and :mod:`dcicore.replay`.

The graph of one state
----------------------
* V_α, the N+1 **compute nodes** (row n = node n, the MEC is 0), with the environment's
  ``node_features``.
* V_β, the L **layers of every task that exists** (row order: task-table row, then layer), with
  the environment's ``task_features``. Empty rows of the environment's fixed-size task table are
  not tasks and are not in the graph (see *Two forms* below).
* E_α: compute node i – j where ``node_links[i, j] > 0``, weighted by that value (the link's
  spectral efficiency / 32, in (0, 1]).
* E_β: layer l – l+1 of the same task (the execution order), weight 1.
* E_αβ: layer – the node that ran / runs it (``assignment``), and the task's *next* layer – the
  node that holds its data (``task_location``), weight 1.

Every edge is used in both directions. Both feature kinds go into one matrix X (Sec 3.1's
|V| × d) of width :data:`NUM_FEATURES` = 16: columns 0–5 the compute-node features, 6–13 the
task-layer features, 14 = "is a compute node", 15 = "is a task layer" (the other kind's columns
are zero). The GCN propagates with the normalized adjacency of Eq 11,
Â_norm = D̂^-1/2 (A + I) D̂^-1/2 with D̂_ii = Σ_j (A + I)_ij.

Two forms
---------
*Fast form* (what :class:`GraphBatch` holds, what the fast path reads): all B graphs stacked into
one block-diagonal graph of R rows, compact: the N+1 compute nodes and the L layers of every
*existing* task of each state, with Â_norm as one sparse CSR matrix (R, R). An empty table row
would only form an isolated 8-layer chain with constant features: it touches no other node, so
leaving it out changes no embedding that the heads read. ``head_adj`` holds the rows of Â_norm
that the last GCN layer needs (the *head rows*: every compute node, and the layers j >= next
layer of every ready task, the block ends the block branch may choose).

*Reference form* (:meth:`GraphBatch.pyg`): a torch-geometric ``Batch`` of the full padded graphs
exactly as the environment lays them out, V = (N+1) + M·L nodes each, including the empty rows'
chains; the reference GCN (torch_geometric.nn.GCNConv) runs on it. A test checks both forms give
the same Q-values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["GraphBatch", "obs_to_graph", "collate", "build_graph", "normalized_adjacency",
           "NUM_FEATURES", "NODE_COLS", "TASK_COLS"]

NUM_FEATURES = 16
"""Width of the node feature matrix X: 6 compute-node + 8 task-layer features + 2 type flags."""
NODE_COLS = slice(0, 6)
TASK_COLS = slice(6, 14)
_NEXT = 5  # column of the "next-to-run" flag in the environment's task_features


def _csr(crow, col, val, shape) -> torch.Tensor:
    """A torch CSR tensor from numpy arrays (built sorted here, so invariant checks are skipped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta" is not for readers
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(val), size=shape,
            check_invariants=False,
        )


@dataclass
class GraphBatch:
    """B state graphs of one config (see the module docstring for the graph).

    Shapes: R = Σ_b (N+1 + L·tasks_b) compact rows (graph b's compute nodes first, then the
    layers of its existing tasks in table order); Q = ready tasks in the batch (in (b, m)
    order); H = B·(N+1) + T head rows: all compute nodes (graph-major), then, for each ready
    task q in turn, its layers next..L-1 (T rows in all).
    """

    num_graphs: int  # B
    num_nodes: int  # N+1
    num_tasks: int  # M (task-table rows)
    num_layers: int  # L
    x: torch.Tensor  # (R, 16) float32, node feature matrix X
    adj: torch.Tensor  # (R, R) sparse CSR, D̂^-1/2 (A+I) D̂^-1/2 (Eq 11)
    head_adj: torch.Tensor  # (H, R) sparse CSR, the rows of adj the last layer needs
    head_rows: torch.Tensor  # (H,) long, compact row of each head row
    node_rows: torch.Tensor  # (B, N+1) long, compact row of compute node n
    task_rows: torch.Tensor  # (B, M, L) long, compact row of task layer (-1: empty table row)
    ready: torch.Tensor  # (B, M) bool, the task needs an action
    next_layer: torch.Tensor  # (B, M) long, first unprocessed layer (L if none, 0 if empty)
    ready_graph: torch.Tensor  # (Q,) long, graph b of each ready task
    ready_task: torch.Tensor  # (Q,) long, table row m of each ready task
    ready_next: torch.Tensor  # (Q,) long, next layer of each ready task
    head_next: torch.Tensor  # (Q,) long, head row of each ready task's next layer
    block_q: torch.Tensor  # (T,) long, ready task of each task head row (head row B·(N+1)+t)
    block_j: torch.Tensor  # (T,) long, layer (a possible block end) of each task head row
    raw: dict = field(repr=False, default_factory=dict)  # numpy inputs, for pyg()

    @property
    def num_rows(self) -> int:
        return int(self.x.shape[0])

    def pyg(self):
        """torch-geometric ``Batch`` of the full padded graphs (the reference path).

        Node order within graph b: compute nodes 0..N, then task-table row m, layer l at
        N+1 + m·L + l. Adds ``edge_weight`` (E,), ``live`` (B·V,) bool (rows of the fast form)
        and ``full_rows`` (R,) (the full index of each compact row).
        """
        from torch_geometric.data import Batch, Data

        r = self.raw
        B, n1, M, L = self.num_graphs, self.num_nodes, self.num_tasks, self.num_layers
        V = n1 + M * L
        graphs = []
        for b in range(B):
            x = np.zeros((V, NUM_FEATURES), dtype=np.float32)
            x[:n1, NODE_COLS] = r["node_x"][b]
            x[:n1, 14] = 1.0
            x[n1:, TASK_COLS] = r["task_x"][b].reshape(M * L, -1)
            x[n1:, 15] = 1.0
            src, dst, w = _edges_one(r["links"][b], r["assign"][b], r["location"][b],
                                     r["task_x"][b], n1, M, L, full=True)
            graphs.append(Data(x=torch.from_numpy(x), edge_index=torch.from_numpy(np.stack([src, dst])),
                               edge_weight=torch.from_numpy(w), num_nodes=V))
        batch = Batch.from_data_list(graphs)
        batch.full_rows = torch.from_numpy(self.raw["full_rows"])
        live = torch.zeros(B * V, dtype=torch.bool)
        live[batch.full_rows] = True
        batch.live = live
        return batch


def _edges_one(links, assign, location, task_x, n1, M, L, full=False):
    """Directed edge list (src, dst, weight) of one state in the full padded numbering.

    ``full=True`` also keeps the chains of empty table rows (the reference form's padding).
    """
    i, j = np.nonzero(links > 0)
    w_aa = links[i, j].astype(np.float32)
    active = location >= 0
    rows = np.arange(M) if full else np.flatnonzero(active)
    base = n1 + rows[:, None] * L
    a = (base + np.arange(L - 1)).ravel()
    b = a + 1
    am, al = np.nonzero((assign >= 0) & active[:, None])
    t_as = n1 + am * L + al
    n_as = assign[am, al]
    nm, nl = np.nonzero((task_x[:, :, _NEXT] > 0.5) & active[:, None])
    t_nx = n1 + nm * L + nl
    n_nx = location[nm]
    src = np.concatenate([i, a, b, t_as, n_as, t_nx, n_nx]).astype(np.int64)
    dst = np.concatenate([j, b, a, n_as, t_as, n_nx, t_nx]).astype(np.int64)
    w = np.concatenate([w_aa, np.ones(src.size - i.size, dtype=np.float32)])
    return src, dst, w


def normalized_adjacency(src, dst, weight, num_rows):
    """Eq 11's D̂^-1/2 (A + I) D̂^-1/2 in CSR form, from a directed edge list (numpy).

    A[dst, src] = weight (list both directions for an undirected edge); self loops of weight 1
    are added; D̂_ii = Σ_j (A + I)_ij (the weighted in-degree plus 1), as torch-geometric's
    ``gcn_norm``. Returns ``(col, row, val, crow)`` sorted by row (= destination): the CSR
    column indices, row indices, values and row pointers (length num_rows + 1).
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    w = np.asarray(weight, dtype=np.float64)
    deg = np.bincount(dst, weights=w, minlength=num_rows) + 1.0
    dinv = 1.0 / np.sqrt(deg)
    val = dinv[src] * w * dinv[dst]
    loops = np.arange(num_rows)
    src = np.concatenate([src, loops])
    dst = np.concatenate([dst, loops])
    val = np.concatenate([val, dinv * dinv]).astype(np.float32)
    order = np.lexsort((src, dst))  # CSR: row = destination, column = source
    src, dst, val = src[order], dst[order], val[order]
    crow = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_rows), out=crow[1:])
    return src, dst, val, crow


def build_graph(node_x, links, task_x, assign, location, ready) -> GraphBatch:
    """Build the fast form from stacked arrays (vectorized over the batch).

    Parameters (numpy): ``node_x`` (B, N+1, 6), ``links`` (B, N+1, N+1), ``task_x`` (B, M, L, 8),
    ``assign`` (B, M, L) int (-1 = not yet run), ``location`` (B, M) int (-1 = empty row),
    ``ready`` (B, M) bool.
    """
    node_x = np.asarray(node_x, dtype=np.float32)
    links = np.asarray(links, dtype=np.float32)
    task_x = np.asarray(task_x, dtype=np.float32)
    assign = np.asarray(assign, dtype=np.int64)
    location = np.asarray(location, dtype=np.int64)
    ready = np.asarray(ready, dtype=bool)
    B, n1 = node_x.shape[:2]
    M, L = task_x.shape[1:3]
    active = location >= 0
    ready = ready & active
    n_act = active.sum(1)
    sizes = n1 + L * n_act  # rows per graph
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    R = int(sizes.sum())
    node_rows = off[:, None] + np.arange(n1)[None, :]  # (B, n1)
    pos = np.cumsum(active, axis=1) - 1  # rank of each active task within its graph
    t0 = off[:, None] + n1 + pos * L  # (B, M) row of layer 0
    task_rows = np.where(active[:, :, None], t0[:, :, None] + np.arange(L), -1)  # (B, M, L)
    # --- features
    x = np.zeros((R, NUM_FEATURES), dtype=np.float32)
    x[node_rows.ravel(), NODE_COLS] = node_x.reshape(-1, node_x.shape[-1])
    x[node_rows.ravel(), 14] = 1.0
    tr = task_rows[active].ravel()
    x[tr, TASK_COLS] = task_x[active].reshape(-1, task_x.shape[-1])
    x[tr, 15] = 1.0
    # --- edges (directed, both directions listed)
    bb, i, j = np.nonzero(links > 0)
    e_src = [node_rows[bb, i]]
    e_dst = [node_rows[bb, j]]
    e_w = [links[bb, i, j]]
    ch = task_rows[active][:, :-1].ravel()  # layer l of every active task, l < L-1
    e_src += [ch, ch + 1]
    e_dst += [ch + 1, ch]
    ab, am, al = np.nonzero((assign >= 0) & active[:, :, None])
    ta, na = task_rows[ab, am, al], node_rows[ab, assign[ab, am, al]]
    e_src += [ta, na]
    e_dst += [na, ta]
    nxt = (task_x[..., _NEXT] > 0.5) & active[:, :, None]
    nb, nm, nl = np.nonzero(nxt)
    tn, nn = task_rows[nb, nm, nl], node_rows[nb, location[nb, nm]]
    e_src += [tn, nn]
    e_dst += [nn, tn]
    src = np.concatenate(e_src).astype(np.int64)
    dst = np.concatenate(e_dst).astype(np.int64)
    n_unit = src.size - e_w[0].size
    w = np.concatenate([e_w[0].astype(np.float32), np.ones(n_unit, dtype=np.float32)])
    src, dst, val, crow = normalized_adjacency(src, dst, w, R)
    adj = _csr(crow, src, val, (R, R))
    # --- head rows: every compute node, then layers j >= next of each ready task
    next_layer = np.where(active, np.where(nxt.any(-1), nxt.argmax(-1), L), 0)
    rb, rm = np.nonzero(ready)
    rnext = next_layer[rb, rm]
    span = L - rnext  # block ends the task may choose
    block_q = np.repeat(np.arange(rb.size), span)  # ready task of each task head row
    first = (np.cumsum(span) - span).astype(np.int64)
    block_j = np.arange(block_q.size) - first[block_q] + rnext[block_q]
    head_rows = np.concatenate([node_rows.ravel(), task_rows[rb[block_q], rm[block_q], block_j]])
    head_next = B * n1 + first  # head row of each ready task's next layer
    counts = crow[head_rows + 1] - crow[head_rows]
    hcrow = np.zeros(head_rows.size + 1, dtype=np.int64)
    np.cumsum(counts, out=hcrow[1:])
    # positions in (src, val) of every nonzero of the head rows
    take = np.repeat(crow[head_rows] - hcrow[:-1], counts) + np.arange(hcrow[-1])
    head_adj = _csr(hcrow, src[take], val[take], (head_rows.size, R))
    V = n1 + M * L
    full_rows = np.empty(R, dtype=np.int64)
    full_rows[node_rows.ravel()] = (np.arange(B)[:, None] * V + np.arange(n1)).ravel()
    ab2, am2 = np.nonzero(active)
    full_rows[task_rows[ab2, am2].ravel()] = (
        (ab2 * V + n1 + am2 * L)[:, None] + np.arange(L)
    ).ravel()
    t = torch.from_numpy
    return GraphBatch(
        num_graphs=B, num_nodes=n1, num_tasks=M, num_layers=L,
        x=t(x), adj=adj, head_adj=head_adj, head_rows=t(head_rows),
        node_rows=t(node_rows), task_rows=t(task_rows), ready=t(ready),
        next_layer=t(next_layer.astype(np.int64)),
        ready_graph=t(rb.astype(np.int64)), ready_task=t(rm.astype(np.int64)),
        ready_next=t(rnext.astype(np.int64)), head_next=t(head_next.astype(np.int64)),
        block_q=t(block_q.astype(np.int64)), block_j=t(block_j.astype(np.int64)),
        raw=dict(node_x=node_x, links=links, task_x=task_x, assign=assign, location=location,
                 full_rows=full_rows),
    )


def _stack(list_of_obs):
    first = list_of_obs[0]
    M = first["task_location"].shape[0]
    ML = first["task_features"].shape[0]
    L = ML // M
    return dict(
        node_x=np.stack([o["node_features"] for o in list_of_obs]),
        links=np.stack([o["node_links"] for o in list_of_obs]),
        task_x=np.stack([o["task_features"] for o in list_of_obs]).reshape(len(list_of_obs), M, L, -1),
        assign=np.stack([o["assignment"] for o in list_of_obs]).reshape(len(list_of_obs), M, L),
        location=np.stack([o["task_location"] for o in list_of_obs]),
        ready=np.stack([o["task_ready"] for o in list_of_obs]).astype(bool),
    )


def collate(list_of_obs) -> GraphBatch:
    """B observations (the environment's Dict) of the same config -> one :class:`GraphBatch`."""
    if len(list_of_obs) == 0:
        raise ValueError("collate needs at least one observation")
    return build_graph(**_stack(list_of_obs))


def obs_to_graph(obs: dict) -> GraphBatch:
    """One observation (the environment's Dict) -> a :class:`GraphBatch` with B = 1."""
    return collate([obs])
