"""The GCN Q-network Q^GCN_θ(s, a) with action-branching heads (Eqs 11 and 16).

Explained in the book's chapter "The graph state and the GCN Q-network"; the graph it reads
is built by :mod:`dcicore.graph`.

The network has two implementations of one function:

* the **reference path** (:meth:`GCNQNetwork.forward_reference`): torch-geometric ``GCNConv``
  layers on the full padded graphs, then plain heads over the whole (B, M) task table — the
  readable specification;
* the **fast path** (:meth:`GCNQNetwork.forward`, :func:`branch_values`): the same parameters
  applied functionally to the compact graph (:class:`~dcicore.graph.GraphBatch`): one sparse
  product per layer, the last layer only at the rows the heads read, the heads only for ready
  tasks, and any number k of parameter sets at once (the population of :mod:`dcicore.population`).

Tests check that both paths give the same Q-values.
"""

from __future__ import annotations

import warnings
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcicore.config import SystemConfig
from dcicore.graph import NUM_FEATURES, GraphBatch

__all__ = [
    "BranchQ",
    "BranchMasks",
    "GCNQNetwork",
    "branch_values",
    "chosen_q",
    "expand_branches",
    "gcn_layer",
    "masks_to_tensors",
    "greedy_action",
    "q_of_actions",
    "max_q",
    "q_at_argmax",
    "compact_masks",
    "compact_actions",
    "q_of_actions_compact",
    "max_q_compact",
    "q_at_argmax_compact",
    "argmax_compact",
    "BRANCHES",
    "tune_cpu_runtime",
    "share_basis",
]

BRANCHES = ("node", "block", "share", "carrier")

class BranchQ(namedtuple("_BranchQ", BRANCHES)):
    """Q-values of the four action branches of every task.

    Full layout (what :meth:`GCNQNetwork.forward` returns): ``node`` (B, M, N+1), ``block``
    (B, M, L), ``share`` (B, M, share_levels), ``carrier`` (B, M, S); rows of tasks that are not
    ready are 0, and so are the block ends j < next layer (never valid). Compact layout
    (:func:`branch_values`): (k, Q, ·) for the Q ready tasks of the batch and k parameter sets.

    Attribute ``idle`` ((B,) or (k, B), or None): the state value V(s) that the joint Q adds to
    the ready tasks' terms (all of Q(s, ·) where no task is ready; see :class:`GCNQNetwork`).
    """

    idle = None

    def with_idle(self, idle):
        """A copy carrying ``idle``."""
        out = BranchQ(*self)
        out.idle = idle
        return out

    def map(self, fn):
        """Apply ``fn`` to every tensor (the four branches and ``idle``)."""
        out = BranchQ(*(fn(v) for v in self))
        out.idle = None if self.idle is None else fn(self.idle)
        return out


BranchMasks = namedtuple("BranchMasks", BRANCHES + ("ready",))
"""Valid choices, full layout: ``node`` (B, M, N+1), ``block`` (B, M, L), ``carrier`` (B, M, S)
bool; ``share`` (B, M) long, the largest valid share level (levels 1..share are valid; the
functions below expand it to (B, M, share_levels) bool); ``ready`` (B, M) bool."""


class GCNQNetwork(nn.Module):
    """GCN Q-network with one Q-value *branch* per action dimension.

    **Torso (Eq 11).** Three GCN layers H^(l+1) = BN(ReLU(Â_norm H^(l) ψ^(l) + b)), widths
    ``hidden`` = (64, 128, 256) (the paper's), over the state graph of :mod:`dcicore.graph`
    (compute nodes and task layers in one graph, X of width 16). Each layer is followed by ReLU
    and batch normalisation, as the paper says. Batch statistics (training mode) are taken over
    the graph's rows: all rows for layers 1–2, the *head rows* (below) for layer 3; in evaluation
    mode the running statistics are used, so the output of a state does not depend on the batch.

    **Why branches.** One slot's action for one task is (node d, block end j, share level r,
    subcarrier w): (N+1)·L·100·S = 51·8·100·10 ≈ 408 000 joint choices at N = 50, far too many
    for one output per action. Action branching (Tavakoli et al., 2018) gives each dimension its
    own head over the shared torso, so the network outputs (N+1) + L + 100 + S numbers per task.

    **Heads** (per ready task q of graph b, with h the final 256-d embeddings):

    * task context u_q = ReLU(W_u [h(next layer of q) ⊕ g_b]), g_b = mean of the compute
      nodes' embeddings (the pooled global embedding);
    * node branch (B, M, N+1): Q_node[q, n] = (W_nq u_q)·(W_nk h(n)) + w_n·h(n) — the task's
      next-layer embedding scored against every compute node;
    * block branch (B, M, L): Q_block[q, j] = (W_bq u_q)·(W_bk h(layer j of q)) + w_b·h(layer j)
      — scored on the task-layer embeddings, for j >= next layer (others are invalid);
    * share branch (B, M, 100): a smooth curve over the levels, Σ_i c_i(u_q) f_i(level) with the
      fixed level features f of :func:`share_basis` (``smooth_share=False``: one free linear
      output per level); subcarrier branch (B, M, S): a linear map of u_q.

    With ``dueling=True`` (Wang et al., 2016) every branch is V_q + (A − mean A), one value V_q
    per task shared by its four branches, the mean taken over the choices the branch computes.

    **The joint Q-value** (Eq 16) of an action a (one row per task) is additive over tasks
    (value decomposition, as VDN, Sunehag et al. 2018): Q(s, a) = V(s) + Σ_q (1/4) Σ_b
    Q_b(q, a_qb), a state value V(s) = w·g + b from the pooled embedding (the ``idle`` head)
    plus, for every ready task, the mean of its four chosen branch values. # NOTE: a sum, not a
    mean, over tasks: the reward of Eq 13 sums the costs and penalties of every task of the
    slot, so each task's term can carry its own cost (a mean would charge every task for the
    whole slot). The branches are chosen independently, so max_a Q = V(s) + Σ_q mean_b max Q_b
    and the greedy action is the per-branch argmax. A state with no ready task has Q = V(s), so
    the TD chain through slots where every task is busy is not cut.

    **Masks** (:func:`masks_to_tensors`) come from ``env.action_masks()``: unreachable / full
    nodes, block ends before the next layer and busy subcarriers get −inf. The share a node can
    still give depends on the node, which a factorised head cannot see; so share levels above
    the largest free level over the task's valid nodes are masked and the environment repairs
    the rest (it grants min(asked, free)).
    """

    def __init__(self, config: SystemConfig, hidden=(64, 128, 256), dueling=False,
                 head_hidden: int = 128, pair_dim: int = 64, smooth_share: bool = True):
        super().__init__()
        from torch_geometric.nn import GCNConv

        if len(hidden) != 3:
            raise ValueError(f"hidden must give 3 layer widths, got {hidden!r}")
        self.config = config
        self.hidden = tuple(int(h) for h in hidden)
        self.dueling = bool(dueling)
        widths = (NUM_FEATURES,) + self.hidden
        self.convs = nn.ModuleList(GCNConv(widths[i], widths[i + 1]) for i in range(3))
        self.norms = nn.ModuleList(nn.BatchNorm1d(w) for w in self.hidden)
        d = self.hidden[-1]
        self.task_trunk = nn.Linear(2 * d, head_hidden)
        self.node_query = nn.Linear(head_hidden, pair_dim)
        self.node_key = nn.Linear(d, pair_dim)
        self.node_bias = nn.Linear(d, 1)
        self.block_query = nn.Linear(head_hidden, pair_dim)
        self.block_key = nn.Linear(d, pair_dim)
        self.block_bias = nn.Linear(d, 1)
        # share branch: values over the levels as a smooth curve (see share_basis)
        self.register_buffer("share_basis", share_basis(config.share_levels) if smooth_share else
                             torch.eye(config.share_levels), persistent=False)
        self.share_head = nn.Linear(head_hidden, self.share_basis.shape[1])
        self.carrier_head = nn.Linear(head_hidden, config.num_subcarriers)
        self.value_head = nn.Linear(head_hidden, 1) if self.dueling else None
        self.idle_head = nn.Linear(d, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights and zero biases in the GCN layers, PyTorch defaults elsewhere."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for norm in self.norms:
            norm.reset_running_stats()

    # ------------------------------------------------------------------ fast path
    def forward(self, graph: GraphBatch) -> BranchQ:
        """Branch Q-values in the full layout (B, M, ·) (fast path)."""
        params = {name: p.unsqueeze(0) for name, p in self.named_parameters()}
        compact = branch_values(self, params, graph, training=self.training)
        return expand_branches(compact, graph).map(lambda v: v[0])

    def forward_compact(self, graph: GraphBatch) -> BranchQ:
        """Branch Q-values of the ready tasks only, (Q, ·) (fast path)."""
        params = {name: p.unsqueeze(0) for name, p in self.named_parameters()}
        return branch_values(self, params, graph, training=self.training).map(lambda v: v[0])

    # ------------------------------------------------------------------ reference path
    def forward_reference(self, graph: GraphBatch) -> BranchQ:
        """The same function with torch-geometric GCNConv on the full padded graphs."""
        pyg = graph.pyg()
        B, n1, M, L = graph.num_graphs, graph.num_nodes, graph.num_tasks, graph.num_layers
        V = n1 + M * L
        live = pyg.full_rows  # (R,) full index of every row of the graph's compact form
        head = live[graph.head_rows]  # full index of every head row
        h = pyg.x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.relu(conv(h, pyg.edge_index, pyg.edge_weight))  # (B·V, hidden_i)
            rows = head if i == 2 else live  # batch statistics over these rows
            h = h.clone()
            h[rows] = norm(h[rows])
        d = h.shape[-1]
        h = h.view(B, V, d)
        C = h[:, :n1]  # (B, N+1, d) compute nodes
        T = h[:, n1:].reshape(B, M, L, d)  # (B, M, L, d) task layers
        g = C.mean(1)  # (B, d)
        nl = graph.next_layer.clamp(max=L - 1)
        E = torch.gather(T, 2, nl[:, :, None, None].expand(B, M, 1, d))[:, :, 0]  # (B, M, d)
        u = F.relu(self.task_trunk(torch.cat([E, g[:, None].expand(B, M, d)], -1)))
        node = self.node_query(u) @ self.node_key(C).transpose(1, 2) + self.node_bias(C).transpose(1, 2)
        block = (self.block_query(u)[:, :, None] * self.block_key(T)).sum(-1) + self.block_bias(T)[..., 0]
        valid_j = torch.arange(L)[None, None, :] >= graph.next_layer[:, :, None]  # (B, M, L)
        block = torch.where(valid_j, block, torch.zeros(()))
        share = self.share_head(u) @ self.share_basis.T
        carrier = self.carrier_head(u)
        if self.dueling:
            v = self.value_head(u)  # (B, M, 1)
            node = v + node - node.mean(-1, keepdim=True)
            bmean = block.sum(-1, keepdim=True) / valid_j.sum(-1, keepdim=True).clamp(min=1)
            block = torch.where(valid_j, v + block - bmean, torch.zeros(()))
            share = v + share - share.mean(-1, keepdim=True)
            carrier = v + carrier - carrier.mean(-1, keepdim=True)
        r = graph.ready[:, :, None].to(node.dtype)
        return BranchQ(node * r, block * r, share * r, carrier * r).with_idle(self.idle_head(g)[:, 0])


def share_basis(levels: int, centres: int = 12) -> torch.Tensor:
    """Fixed features of the share levels, (levels, 3 + centres): ρ, ρ², ρ⁻¹/levels and
    Gaussian bumps at ``centres`` evenly spaced shares (ρ = level / levels).

    The share branch outputs coefficients of these features, so its values over the 100 levels
    form a smooth curve: trying one level teaches the network about its neighbours (with one
    free value per level, each of the 100 levels must be tried separately). Energy grows with
    ρ² (Eq 4) and compute delay with 1/ρ (Eq 1), hence the first three features; the bumps
    let the curve bend where a deadline becomes feasible.
    """
    rho = torch.arange(1, levels + 1, dtype=torch.float32) / levels
    mu = torch.linspace(0.0, 1.0, centres)
    width = 1.0 / max(centres - 1, 1)
    bumps = torch.exp(-0.5 * ((rho[:, None] - mu[None, :]) / width) ** 2)
    return torch.cat([rho[:, None], rho[:, None] ** 2, (1.0 / (rho * levels))[:, None], bumps], 1)


# ---------------------------------------------------------------------- functional fast path
# Layout: activations of k parameter sets are stored as (rows, k, d) so that one sparse product
# aggregates all of them at once (a (rows, k·d) matrix) and every row gather is contiguous.


def rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-parameter-set affine map: x (rows, k, d_in), weight (k, d_out, d_in), bias (k, d_out)
    -> (rows, k, d_out), i.e. y[:, i] = x[:, i] ψ_iᵀ + b_i.

    With k > 1 and no gradient needed it runs one BLAS call per set, writing straight into the
    strided output (no transposed copies); otherwise it uses differentiable batched ops.
    """
    rows, k, d_in = x.shape
    d_out = weight.shape[1]
    if k == 1:
        return F.linear(x[:, 0], weight[0], None if bias is None else bias[0]).unsqueeze(1)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        y = torch.einsum("rki,koi->rko", x, weight)
        return y if bias is None else y + bias
    out = x.new_empty(rows, k, d_out)
    wt = weight.transpose(1, 2)
    for i in range(k):
        if bias is None:
            torch.mm(x[:, i], wt[i], out=out[:, i])
        else:
            torch.addmm(bias[i], x[:, i], wt[i], out=out[:, i])
    return out


def gcn_layer(adj: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One GCN propagation Â_norm H ψ + b (Eq 11) for k parameter sets at once.

    ``adj`` (R_out, R_in) sparse or dense; ``h`` (R_in, k, d_in); ``weight`` (k, d_out, d_in)
    (PyTorch's Linear layout); ``bias`` (k, d_out). Returns (R_out, k, d_out). The sparse
    product comes first, Â(Hψ) = (ÂH)ψ, on the narrower side (d_in <= d_out here).
    """
    r_in, k, d_in = h.shape
    ah = _spmm(adj, h.reshape(r_in, k * d_in)).view(-1, k, d_in)  # (R_out, k, d_in)
    return rows_linear(ah, weight, bias)


def _spmm(adj, dense):
    return torch.sparse.mm(adj, dense) if adj.layout != torch.strided else adj @ dense


def _relu_norm(h, norm: nn.BatchNorm1d, weight, bias, training: bool):
    """ReLU then BatchNorm over rows, for k parameter sets: h (rows, k, d), weight/bias (k, d)."""
    if training:
        if h.shape[1] != 1:
            raise ValueError("training-mode batch norm is for one network (k = 1)")
        out = F.batch_norm(F.relu(h[:, 0]), norm.running_mean, norm.running_var, weight[0],
                           bias[0], True, norm.momentum, norm.eps)
        return out.unsqueeze(1)
    scale = weight * torch.rsqrt(norm.running_var + norm.eps)  # (k, d)
    shift = bias - norm.running_mean * scale
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return torch.addcmul(shift, F.relu(h), scale)
    h = F.relu_(h)
    return h.mul_(scale).add_(shift)


def _lin(x, params, name):
    """x (rows, k, d_in) through the k-stacked Linear ``name`` -> (rows, k, d_out)."""
    return rows_linear(x, params[name + ".weight"], params[name + ".bias"])


def _torso(net, params, graph: GraphBatch, head_adj, training: bool) -> torch.Tensor:
    """Three GCN layers, each ReLU + BN (Eq 11); the last one only at the rows of ``head_adj``.
    Returns (H, k, hidden[-1])."""
    ax = getattr(graph, "_ax", None)
    if ax is None:
        ax = _spmm(graph.adj, graph.x)  # (R, 16) Â X, the same for every parameter set
        graph._ax = ax
    w0, b0 = params["convs.0.lin.weight"], params["convs.0.bias"]  # (k, 64, 16), (k, 64)
    k = w0.shape[0]
    if k == 1:
        h = F.linear(ax, w0[0], b0[0]).unsqueeze(1)  # (R, 1, 64)
    else:  # one GEMM for all k: ÂX (R, 16) @ [ψ_1 … ψ_k] (16, k·64)
        w_cat = w0.permute(2, 0, 1).reshape(w0.shape[2], -1)
        h = torch.addmm(b0.reshape(-1), ax, w_cat).view(ax.shape[0], k, -1)  # (R, k, 64)
    h = _relu_norm(h, net.norms[0], params["norms.0.weight"], params["norms.0.bias"], training)
    h = gcn_layer(graph.adj, h, params["convs.1.lin.weight"], params["convs.1.bias"])  # (R, k, 128)
    h = _relu_norm(h, net.norms[1], params["norms.1.weight"], params["norms.1.bias"], training)
    h = gcn_layer(head_adj, h, params["convs.2.lin.weight"], params["convs.2.bias"])  # (H, k, 256)
    return _relu_norm(h, net.norms[2], params["norms.2.weight"], params["norms.2.bias"], training)


def branch_values(net: GCNQNetwork, params: dict, graph: GraphBatch, training: bool = False) -> BranchQ:
    """Compact branch Q-values (k, Q, ·) of the Q ready tasks for k stacked parameter sets.

    ``params`` maps each name of ``net.named_parameters()`` to a tensor with a leading k
    dimension. The batch-norm running statistics are ``net``'s buffers (shared by all k).
    Block ends j < next layer are 0 (invalid; masked by every consumer).
    """
    B, n1, L = graph.num_graphs, graph.num_nodes, graph.num_layers
    h = _torso(net, params, graph, graph.head_adj, training)  # (H, k, d)
    k = h.shape[1]
    d = h.shape[-1]
    # --- heads
    C = h[: B * n1]  # (B·n1, k, d) compute nodes
    Th = h[B * n1:]  # (T, k, d) task head rows: layers j >= next of each ready task
    g = C.view(B, n1, k, d).mean(1)  # (B, k, d) pooled global embedding
    rg = graph.ready_graph
    Q = rg.numel()
    E = h[graph.head_next]  # (Q, k, d) next layer of each ready task
    u = F.relu(_lin(torch.cat([E, g[rg]], -1), params, "task_trunk"))  # (Q, k, hh)
    # node branch: per graph, the ready tasks' queries against the compute nodes' keys
    qn = _lin(u, params, "node_query")  # (Q, k, p)
    kn = _lin(C, params, "node_key").view(B, n1, k, -1)  # (B, n1, k, p)
    bn = _lin(C, params, "node_bias").view(B, n1, k)  # (B, n1, k)
    slot = graph.ready_slot if hasattr(graph, "ready_slot") else _ready_slot(graph)
    qmax = int(slot.max()) + 1 if Q else 1
    qpad = qn.new_zeros(B, qmax, k, qn.shape[-1])
    qpad[rg, slot] = qn
    scores = torch.matmul(qpad.permute(0, 2, 1, 3), kn.permute(0, 2, 3, 1))  # (B, k, qmax, n1)
    node = scores[rg, :, slot] + bn[rg].transpose(1, 2)  # (Q, k, n1)
    # block branch: the task's query against each candidate layer's key
    qb = _lin(u, params, "block_query")  # (Q, k, p)
    kb = _lin(Th, params, "block_key")  # (T, k, p)
    sb = (qb[graph.block_q] * kb).sum(-1) + _lin(Th, params, "block_bias")[..., 0]  # (T, k)
    block = sb.new_zeros(Q, k, L)
    block[graph.block_q, :, graph.block_j] = sb
    share = _lin(u, params, "share_head") @ net.share_basis.T  # (Q, k, levels)
    carrier = _lin(u, params, "carrier_head")  # (Q, k, S)
    if net.dueling:
        v = _lin(u, params, "value_head")  # (Q, k, 1)
        node = v + node - node.mean(-1, keepdim=True)
        valid_j = (torch.arange(L)[None, :] >= graph.ready_next[:, None])[:, None, :]  # (Q, 1, L)
        bmean = block.sum(-1, keepdim=True) / valid_j.sum(-1, keepdim=True).clamp(min=1)
        block = torch.where(valid_j, v + block - bmean, torch.zeros(()))
        share = v + share - share.mean(-1, keepdim=True)
        carrier = v + carrier - carrier.mean(-1, keepdim=True)
    idle = _lin(g, params, "idle_head")[..., 0].transpose(0, 1)  # (k, B)
    out = BranchQ(*(t.transpose(0, 1) for t in (node, block, share, carrier)))  # (k, Q, ·)
    return out.with_idle(idle)


def chosen_q(net: GCNQNetwork, params: dict, graph: GraphBatch, actions_c: torch.Tensor) -> torch.Tensor:
    """Q(s, a) (k, B) of given actions, computing only what those actions read (evaluation mode).

    The same numbers as ``q_of_actions_compact(branch_values(...), actions_c, graph)``, but the
    last GCN layer runs only at the compute nodes, each ready task's next layer and its chosen
    block end, and each branch head only at the chosen choice (a bilinear score against one
    node key, one row of the share/subcarrier weights). With dueling branches the mean over all
    choices is needed, so this falls back to :func:`branch_values`. ``actions_c``: (Q, 4) from
    :func:`compact_actions`.
    """
    if net.dueling:
        return q_of_actions_compact(branch_values(net, params, graph), actions_c, graph)
    B, n1 = graph.num_graphs, graph.num_nodes
    rg = graph.ready_graph
    Q = rg.numel()
    pos = graph.head_next + (actions_c[:, 1] - graph.ready_next)  # head row of the chosen block end
    rows = torch.cat([torch.arange(B * n1), graph.head_next, pos])
    h = _torso(net, params, graph, _select_rows(graph.head_adj, rows), training=False)  # (H', k, d)
    k, d = h.shape[1], h.shape[2]
    C = h[: B * n1]
    E = h[B * n1: B * n1 + Q]  # next layer of each ready task
    Bl = h[B * n1 + Q:]  # chosen block end of each ready task
    g = C.view(B, n1, k, d).mean(1)
    u = F.relu(_lin(torch.cat([E, g[rg]], -1), params, "task_trunk"))  # (Q, k, hh)
    Cn = C[rg * n1 + actions_c[:, 0]]  # (Q, k, d) the chosen node of each task
    node = (_lin(u, params, "node_query") * _lin(Cn, params, "node_key")).sum(-1) + _lin(Cn, params, "node_bias")[..., 0]
    block = (_lin(u, params, "block_query") * _lin(Bl, params, "block_key")).sum(-1) + _lin(Bl, params, "block_bias")[..., 0]

    def picked(name, col):  # u · W[a] + b[a] for the chosen output a of a linear head
        w = params[name + ".weight"][:, actions_c[:, col]]  # (k, Q, hh)
        b = params[name + ".bias"][:, actions_c[:, col]]  # (k, Q)
        return (u * w.transpose(0, 1)).sum(-1) + b.transpose(0, 1)

    # share: coefficients of the basis, read at the chosen level's basis row
    share = (_lin(u, params, "share_head") * net.share_basis[actions_c[:, 2]][:, None, :]).sum(-1)
    per_task = (node + block + share + picked("carrier_head", 3)) / 4  # (Q, k)
    idle = _lin(g, params, "idle_head")[..., 0].transpose(0, 1)  # (k, B)
    return _task_sum(per_task.transpose(0, 1), graph, idle)


def _select_rows(csr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The given rows of a CSR matrix, as a new CSR matrix (len(rows), n_cols)."""
    crow, col, val = csr.crow_indices(), csr.col_indices(), csr.values()
    counts = crow[rows + 1] - crow[rows]
    new_crow = torch.zeros(rows.numel() + 1, dtype=crow.dtype)
    torch.cumsum(counts, 0, out=new_crow[1:])
    take = torch.repeat_interleave(crow[rows] - new_crow[:-1], counts) + torch.arange(int(new_crow[-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(new_crow, col[take], val[take], size=(rows.numel(), csr.shape[1]),
                                       check_invariants=False)


def _ready_slot(graph: GraphBatch) -> torch.Tensor:
    """Rank of each ready task among the ready tasks of its graph, (Q,)."""
    rg = graph.ready_graph
    if rg.numel() == 0:
        slot = rg.clone()
    else:
        counts = torch.bincount(rg, minlength=graph.num_graphs)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(rg.numel()) - starts[rg]
    graph.ready_slot = slot
    return slot


def expand_branches(compact: BranchQ, graph: GraphBatch) -> BranchQ:
    """Compact (k, Q, ·) branch values -> full layout (k, B, M, ·), 0 for tasks not ready."""
    B, M = graph.num_graphs, graph.num_tasks
    out = []
    for v in compact:
        full = v.new_zeros(v.shape[0], B, M, v.shape[-1])
        full[:, graph.ready_graph, graph.ready_task] = v
        out.append(full)
    return BranchQ(*out).with_idle(compact.idle)


# ---------------------------------------------------------------------- process settings
def tune_cpu_runtime(threads: int | None = None) -> dict:
    """Process-wide CPU settings for training and benchmarks (library code never calls this).

    * glibc's allocator returns every freed block above 128 KiB to the OS and page-faults it
      back on the next allocation; one population fitness at N = 50 allocates such blocks
      thousands of times (about a million page faults, over a second of system time). Raising
      the mmap threshold to 32 MiB and the trim threshold to 1 GiB keeps them in the heap.
    * ``threads``: ``torch.set_num_threads``. On a small or shared machine 1 thread is often
      fastest for single decisions and small batches.

    Returns what was set; a no-op for the allocator outside glibc.
    """
    done = {}
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers (malloc.h)
        done["mmap_threshold"] = bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024))
        done["trim_threshold"] = bool(libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024))
    except (OSError, AttributeError):
        done["allocator"] = False
    if threads:
        torch.set_num_threads(int(threads))
        done["threads"] = int(threads)
    return done


# ---------------------------------------------------------------------- masks and actions
def masks_to_tensors(masks_list) -> BranchMasks:
    """A list of ``env.action_masks()`` dicts -> :data:`BranchMasks` of bool tensors (B, M, ·).

    Rules (see :class:`GCNQNetwork`): share level ℓ (1-based) is valid for task m if
    ℓ <= max over m's valid nodes of the node's free levels. A ready task with no valid node
    (all reachable nodes full) may choose any node and share level 1 (the environment makes
    it wait); with no free subcarrier any subcarrier is allowed (the environment then keeps the
    data where it is).
    """
    node = np.stack([m["node"] for m in masks_list]).astype(bool)  # (B, M, n1)
    block = np.stack([m["block"] for m in masks_list]).astype(bool)  # (B, M, L)
    free = np.stack([m["max_level"] for m in masks_list]).astype(np.int64)  # (B, n1)
    carrier = np.stack([m["carrier"] for m in masks_list]).astype(bool)  # (B, S)
    ready = np.stack([m["ready"] for m in masks_list]).astype(bool)  # (B, M)
    return _masks_from_arrays(node, block, free, carrier, ready)


def _masks_from_arrays(node, block, free, carrier, ready) -> BranchMasks:
    B, M, _ = node.shape
    none = ~node.any(-1)  # (B, M) ready task with no valid node
    node = node | none[:, :, None]
    top = np.where(node, free[:, None, :], 0).max(-1)  # (B, M) largest free level
    top = np.where(none, 1, np.maximum(top, 1))
    carrier = carrier | ~carrier.any(-1, keepdims=True)
    return BranchMasks(
        node=torch.from_numpy(node),
        block=torch.from_numpy(block | ~block.any(-1, keepdims=True)),
        share=torch.from_numpy(top.astype(np.int64)),
        carrier=torch.from_numpy(np.ascontiguousarray(np.broadcast_to(carrier[:, None, :], (B, M, carrier.shape[-1])))),
        ready=torch.from_numpy(ready),
    )


def _share_mask(top: torch.Tensor, levels: int) -> torch.Tensor:
    """(…) largest allowed level -> (…, levels) bool: index ℓ-1 valid iff ℓ <= top."""
    return torch.arange(1, levels + 1) <= top[..., None]


def _full_share(masks: BranchMasks, levels: int) -> BranchMasks:
    if masks.share.dim() == masks.node.dim() - 1:  # stored as the largest level
        return masks._replace(share=_share_mask(masks.share, levels))
    return masks


def _as_masks(masks, levels: int) -> BranchMasks:
    if isinstance(masks, dict):
        masks = masks_to_tensors([masks])
    return _full_share(masks, levels)


def compact_masks(masks: BranchMasks, graph: GraphBatch) -> BranchMasks:
    """Full-layout masks -> the ready tasks' rows, (Q, ·) (``ready`` becomes all True)."""
    rg, rt = graph.ready_graph, graph.ready_task
    share = masks.share[rg, rt]
    return BranchMasks(masks.node[rg, rt], masks.block[rg, rt], share, masks.carrier[rg, rt],
                       torch.ones(rg.numel(), dtype=torch.bool))


def compact_actions(actions: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
    """(B, M, 4) actions -> the ready tasks' rows (Q, 4), block end clipped to [next, L-1] (the
    environment's repair rule 1, so a stored action always names a computed block value)."""
    a = actions[graph.ready_graph, graph.ready_task].clone()
    a[:, 1] = torch.maximum(a[:, 1], graph.ready_next).clamp(max=graph.num_layers - 1)
    return a


def _masked(v, m):
    return v.masked_fill(~m, float("-inf"))


def _task_mean(per_task: torch.Tensor, graph: GraphBatch, idle=None) -> torch.Tensor:
    """(k, Q) per ready task -> (k, B) mean over each graph's ready tasks; ``idle`` (k, B)
    (or 0 if None) where a graph has no ready task."""
    k = per_task.shape[0]
    out = per_task.new_zeros(k, graph.num_graphs)
    out = out.index_add(1, graph.ready_graph, per_task)
    counts = torch.bincount(graph.ready_graph, minlength=graph.num_graphs)
    out = out / counts.clamp(min=1).to(out.dtype)
    if idle is None:
        return out
    return torch.where(counts > 0, out, idle)


def _task_sum(per_task: torch.Tensor, graph: GraphBatch, idle=None) -> torch.Tensor:
    """(k, Q) per ready task -> (k, B): V(s) + Σ over each graph's ready tasks (the additive,
    VDN-style joint value; ``idle`` (k, B) is V(s), 0 if None)."""
    out = per_task.new_zeros(per_task.shape[0], graph.num_graphs).index_add(1, graph.ready_graph, per_task)
    return out if idle is None else out + idle


def q_of_actions_compact(bq: BranchQ, actions_c: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
    """Q(s, a) (k, B) from compact values (k, Q, ·) and compact actions (Q, 4)."""
    k = bq.node.shape[0]
    chosen = [torch.gather(v, 2, actions_c[None, :, i, None].expand(k, -1, 1))[..., 0]
              for i, v in enumerate(bq)]
    return _task_sum(torch.stack(chosen, 0).mean(0), graph, bq.idle)


def max_q_compact(bq: BranchQ, masks_c: BranchMasks, graph: GraphBatch) -> torch.Tensor:
    """max_a Q(s, a) (k, B) = V(s) + ready-task sum of the mean of the masked branch maxima."""
    levels = bq.share.shape[-1]
    masks_c = _full_share(masks_c, levels)
    best = [_masked(v, m).amax(-1) for v, m in zip(bq, masks_c[:4])]
    return _task_sum(torch.stack(best, 0).mean(0), graph, bq.idle)


def argmax_compact(bq: BranchQ, masks_c: BranchMasks) -> torch.Tensor:
    """(k, Q, 4) masked argmax of every branch (share as level index = level - 1)."""
    levels = bq.share.shape[-1]
    masks_c = _full_share(masks_c, levels)
    return torch.stack([_masked(v, m).argmax(-1) for v, m in zip(bq, masks_c[:4])], -1)


def q_at_argmax_compact(bq_target: BranchQ, bq_online: BranchQ, masks_c: BranchMasks,
                        graph: GraphBatch) -> torch.Tensor:
    """Double DQN (k, B): the target values at the online network's masked argmax."""
    a = argmax_compact(bq_online, masks_c)  # (k, Q, 4)
    chosen = [torch.gather(v, 2, a[..., i, None])[..., 0] for i, v in enumerate(bq_target)]
    return _task_sum(torch.stack(chosen, 0).mean(0), graph, bq_target.idle)


# ---------------------------------------------------------------------- full-layout API
def greedy_action(branch_q: BranchQ, masks) -> np.ndarray:
    """The greedy action of one state: (M, 4) int64 in the environment's format.

    ``branch_q`` is the full layout with B = 1 ((1, M, ·) or (M, ·)); ``masks`` an
    ``env.action_masks()`` dict or :data:`BranchMasks`. Column 2 is the share level − 1.
    Rows of tasks that are not ready are 0.
    """
    bq = BranchQ(*(v if v.dim() == 3 else v[None] for v in branch_q))
    m = _as_masks(masks, bq.share.shape[-1])
    cols = [_masked(v, mk).argmax(-1) for v, mk in zip(bq, m[:4])]  # (1, M) each
    act = torch.stack(cols, -1)[0]
    act[~m.ready[0]] = 0
    return act.cpu().numpy().astype(np.int64)


def _ready_sum(per_task: torch.Tensor, ready: torch.Tensor, idle=None) -> torch.Tensor:
    """V(s) (``idle``) + Σ over the ready tasks (full layout; see :func:`_task_sum`)."""
    out = (per_task * ready.to(per_task.dtype)).sum(-1)
    return out if idle is None else out + idle


def q_of_actions(branch_q: BranchQ, actions: torch.Tensor, ready: torch.Tensor) -> torch.Tensor:
    """Q(s, a) (B,) (or (…, B) with leading dims): V(s) + Σ over ready tasks of the mean over
    branches of the chosen branch values. ``actions`` (B, M, 4) long, ``ready`` (B, M) bool."""
    actions = torch.as_tensor(actions, dtype=torch.long)
    chosen = []
    for i, v in enumerate(branch_q):
        idx = actions[..., i, None].expand(*v.shape[:-1], 1)
        chosen.append(torch.gather(v, -1, idx)[..., 0])
    return _ready_sum(torch.stack(chosen, 0).mean(0), ready, branch_q.idle)


def max_q(branch_q: BranchQ, masks) -> torch.Tensor:
    """max_a Q(s, a) (B,): V(s) + Σ over ready tasks of the mean of the masked branch maxima."""
    m = _as_masks(masks, branch_q.share.shape[-1])
    best = [torch.where(m.ready, _masked(v, mk).amax(-1), torch.zeros(()))
            for v, mk in zip(branch_q, m[:4])]
    return _ready_sum(torch.stack(best, 0).mean(0), m.ready, branch_q.idle)


def q_at_argmax(branch_q_target: BranchQ, branch_q_online: BranchQ, masks) -> torch.Tensor:
    """Double DQN (B,): target-network values at the online network's masked argmax."""
    m = _as_masks(masks, branch_q_online.share.shape[-1])
    chosen = []
    for vt, vo, mk in zip(branch_q_target, branch_q_online, m[:4]):
        a = _masked(vo, mk).argmax(-1, keepdim=True)
        chosen.append(torch.gather(vt, -1, a)[..., 0])
    return _ready_sum(torch.stack(chosen, 0).mean(0), m.ready, branch_q_target.idle)
