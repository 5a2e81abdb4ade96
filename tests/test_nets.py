"""GCN layer, graph building, the branching Q-network and its masks (dcicore.graph, dcicore.nets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dcicore.config import SystemConfig
from dcicore.env import DCIEnv
from dcicore.graph import collate, normalized_adjacency, obs_to_graph
from dcicore.nets import (
    BranchQ,
    GCNQNetwork,
    gcn_layer,
    greedy_action,
    masks_to_tensors,
    max_q,
    q_at_argmax,
    q_of_actions,
)




def _dense(src, dst, w, n):
    col, row, val, _ = normalized_adjacency(src, dst, w, n)
    a = torch.zeros(n, n)
    a[torch.from_numpy(row), torch.from_numpy(col)] = torch.from_numpy(val)
    return a


# ---------------------------------------------------------------------- the 3-node graph
PATH_SRC, PATH_DST = [0, 1, 1, 2], [1, 0, 2, 1]  # the path 0 - 1 - 2, both directions


def test_normalized_adjacency_of_a_three_node_path_by_hand():
    a = _dense(PATH_SRC, PATH_DST, [1.0] * 4, 3)
    # A + I has degrees 2, 3, 2: entries 1/sqrt(d_i d_j)
    s6 = 1 / math.sqrt(6)
    expected = torch.tensor([[1 / 2, s6, 0.0], [s6, 1 / 3, s6], [0.0, s6, 1 / 2]])
    torch.testing.assert_close(a, expected)


def test_weighted_edge_enters_degree_and_value():
    a = _dense([0, 1], [1, 0], [0.5, 0.5], 2)  # one edge of weight 0.5: degrees 1.5, 1.5
    torch.testing.assert_close(a, torch.tensor([[1 / 1.5, 0.5 / 1.5], [0.5 / 1.5, 1 / 1.5]]))


def test_gcn_layer_on_three_nodes_by_hand_and_against_pyg():
    from torch_geometric.nn import GCNConv

    a = _dense(PATH_SRC, PATH_DST, [1.0] * 4, 3)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    w = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, -1.0]])  # (d_out=3, d_in=2), Linear layout
    b = torch.tensor([0.5, 0.0, -0.5])
    out = gcn_layer(a, x[:, None, :], w[None], b[None])  # (3, k=1, 3)
    assert out.shape == (3, 1, 3)
    torch.testing.assert_close(out[:, 0], a @ x @ w.T + b)
    # row 0 by hand: Â_00 x_0 + Â_01 x_1 = (1/2, 1/sqrt 6); then ψ and b
    h0 = torch.tensor([0.5, 1 / math.sqrt(6)])
    torch.testing.assert_close(out[0, 0], w @ h0 + b)
    conv = GCNConv(2, 3)
    with torch.no_grad():
        conv.lin.weight.copy_(w)
        conv.bias.copy_(b)
    ref = conv(x, torch.tensor([PATH_SRC, PATH_DST]))
    torch.testing.assert_close(out[:, 0], ref, rtol=1e-6, atol=1e-6)


def test_gcn_layer_is_permutation_equivariant_and_batches_parameter_sets():
    a = _dense(PATH_SRC, PATH_DST, [1.0] * 4, 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g)
    w = torch.randn(2, 5, 4, generator=g)  # k = 2 parameter sets
    b = torch.randn(2, 5, generator=g)
    perm = torch.tensor([2, 0, 1])
    p = torch.eye(3)[perm]
    h = x[:, None, :].expand(3, 2, 4).contiguous()
    out = gcn_layer(a, h, w, b)  # (3, 2, 5)
    out_p = gcn_layer(p @ a @ p.T, h[perm], w, b)
    torch.testing.assert_close(out_p, out[perm], rtol=1e-6, atol=1e-6)
    for i in range(2):  # each parameter set is its own GCN layer
        torch.testing.assert_close(out[:, i], a @ x @ w[i].T + b[i], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- network on env states
def _states(num_devices=2, steps=3, seed=0):
    cfg = SystemConfig(num_devices=num_devices)
    env = DCIEnv(cfg)
    obs, _ = env.reset(seed=seed, options={"initial_tasks": np.full(num_devices, 2)})
    out = []
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        out.append((obs, env.action_masks()))
        highs = (cfg.num_nodes, cfg.num_layers, 30, cfg.num_subcarriers)
        a = np.stack([rng.integers(0, n, cfg.max_tasks) for n in highs], 1)
        obs, *_ = env.step(a)
    return cfg, env, out


def _net(cfg, dueling=False, seed=0):
    torch.manual_seed(seed)
    net = GCNQNetwork(cfg, dueling=dueling)
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for norm in net.norms:
            norm.running_mean.uniform_(-0.3, 0.3)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return net.eval()


def test_graph_of_a_three_node_system_has_the_papers_parts():
    cfg, env, states = _states(num_devices=2)
    obs, _ = states[0]
    g = obs_to_graph(obs)
    active = int((obs["task_location"] >= 0).sum())
    assert g.num_nodes == 3 and g.num_rows == 3 + cfg.num_layers * active
    x = g.x
    assert torch.all(x[:3, 14] == 1) and torch.all(x[3:, 15] == 1)
    dense = g.adj.to_dense()
    torch.testing.assert_close(dense, dense.T)  # undirected graph, symmetric normalisation
    pyg = g.pyg()
    assert pyg.num_nodes == 3 + cfg.max_tasks * cfg.num_layers
    # a task layer links to the next layer of its task (E_β)
    r0 = int(g.task_rows[0, int(np.flatnonzero(obs["task_location"] >= 0)[0]), 0])
    assert dense[r0, r0 + 1] > 0


@pytest.mark.parametrize("dueling", [False, True])
def test_network_shapes_and_fast_path_equals_torch_geometric_reference(dueling):
    cfg, env, states = _states(num_devices=2)
    net = _net(cfg, dueling)
    g = collate([s[0] for s in states])
    B, M = len(states), cfg.max_tasks
    with torch.no_grad():
        fast = net(g)
        ref = net.forward_reference(g)
    shapes = [(B, M, cfg.num_nodes), (B, M, cfg.num_layers), (B, M, cfg.share_levels), (B, M, cfg.num_subcarriers)]
    assert [tuple(v.shape) for v in fast] == shapes
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # rows of tasks that are not ready are 0
    assert torch.all(fast.node[~g.ready] == 0)
    # training mode (batch statistics) agrees too
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    fast_t = net(g)
    net.load_state_dict(state)
    ref_t = net.forward_reference(g)
    for a, b in zip(fast_t, ref_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _permute_tasks(obs, perm, L):
    out = dict(obs)
    M = obs["task_location"].shape[0]
    tf = obs["task_features"].reshape(M, L, -1)
    out["task_features"] = tf[perm].reshape(M * L, -1)
    out["assignment"] = obs["assignment"].reshape(M, L)[perm].reshape(-1)
    out["task_location"] = obs["task_location"][perm]
    out["task_ready"] = obs["task_ready"][perm]
    return out


def test_network_is_equivariant_to_reordering_the_task_table():
    cfg, env, states = _states(num_devices=2, steps=2)
    net = _net(cfg)
    obs = states[1][0]
    perm = np.random.default_rng(3).permutation(cfg.max_tasks)
    with torch.no_grad():
        q = net(obs_to_graph(obs))
        qp = net(obs_to_graph(_permute_tasks(obs, perm, cfg.num_layers)))
    for a, b in zip(q, qp):
        torch.testing.assert_close(b[0], a[0][perm], rtol=1e-5, atol=1e-5)


def test_reset_parameters_restores_a_fresh_network():
    cfg = SystemConfig(num_devices=2)
    torch.manual_seed(1)
    net = GCNQNetwork(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
        net.norms[0].running_mean.fill_(5.0)
    net.reset_parameters()
    assert not torch.all(net.convs[1].lin.weight == 3.0)
    assert torch.all(net.convs[1].bias == 0) and torch.all(net.norms[0].running_mean == 0)


# ---------------------------------------------------------------------- masks and Q of actions
def test_greedy_action_never_picks_an_invalid_choice():
    cfg, env, states = _states(num_devices=3, steps=4, seed=2)
    net = _net(cfg)
    gen = torch.Generator().manual_seed(0)
    for obs, masks in states:
        bq = net(obs_to_graph(obs))
        for trial in range(5):
            # random values, with the invalid choices made the most attractive
            noisy = BranchQ(*(torch.randn(v.shape, generator=gen) for v in bq))
            m = masks_to_tensors([masks])
            share_ok = torch.arange(1, cfg.share_levels + 1) <= m.share[..., None]
            noisy = BranchQ(
                noisy.node + 100.0 * (~m.node), noisy.block + 100.0 * (~m.block),
                noisy.share + 100.0 * (~share_ok), noisy.carrier + 100.0 * (~m.carrier),
            )
            a = greedy_action(noisy, masks)
            assert a.shape == (cfg.max_tasks, 4) and a.dtype == np.int64
            for r in np.flatnonzero(masks["ready"]):
                if masks["node"][r].any():
                    assert masks["node"][r, a[r, 0]]
                    top = masks["max_level"][masks["node"][r]].max()
                    assert a[r, 2] + 1 <= max(top, 1)
                assert masks["block"][r, a[r, 1]]
                if masks["carrier"].any():
                    assert masks["carrier"][a[r, 3]]
            assert np.all(a[~masks["ready"]] == 0)


def test_masks_to_tensors_share_rule_and_fallbacks():
    masks = dict(
        node=np.array([[True, False, True], [False, False, False], [False, False, False]]),
        block=np.array([[False, True], [True, True], [False, False]]),
        max_level=np.array([40, 90, 25]),
        carrier=np.array([False, False]),
        ready=np.array([True, True, False]),
    )
    m = masks_to_tensors([masks])
    assert m.share[0].tolist() == [40, 1, 1]  # max over valid nodes {0, 2}; fallbacks give 1
    assert m.node[0, 1].all()  # no valid node: any node (the env makes it wait)
    assert m.carrier.all()  # no free subcarrier: any (the data then stays where it is)
    assert m.block[0, 0].tolist() == [False, True]


def _hand_branch_q():
    # B = 1, M = 2 tasks, N+1 = 2 nodes, L = 3, 3 share levels, S = 2 subcarriers
    return BranchQ(
        node=torch.tensor([[[1.0, 4.0], [2.0, -1.0]]]),
        block=torch.tensor([[[0.0, 3.0, 1.0], [0.0, 0.0, 6.0]]]),
        share=torch.tensor([[[5.0, 1.0, 9.0], [2.0, 3.0, 0.0]]]),
        carrier=torch.tensor([[[-2.0, 2.0], [1.0, 1.5]]]),
    )


def test_q_of_actions_is_v_plus_the_ready_sum_of_the_branch_mean():
    bq = _hand_branch_q()
    actions = torch.tensor([[[1, 2, 0, 0], [0, 2, 1, 1]]])
    both = q_of_actions(bq, actions, torch.tensor([[True, True]]))
    # task 0: (4 + 1 + 5 - 2)/4 = 2; task 1: (2 + 6 + 3 + 1.5)/4 = 3.125; no V(s): 0
    torch.testing.assert_close(both, torch.tensor([2.0 + 3.125]))
    only0 = q_of_actions(bq, actions, torch.tensor([[True, False]]))
    torch.testing.assert_close(only0, torch.tensor([2.0]))
    none = q_of_actions(bq, actions, torch.tensor([[False, False]]))
    torch.testing.assert_close(none, torch.tensor([0.0]))
    # with a state value V(s) = -1.5: Q = V + the task terms; nothing ready -> V
    bqv = bq.with_idle(torch.tensor([-1.5]))
    torch.testing.assert_close(q_of_actions(bqv, actions, torch.tensor([[True, True]])), torch.tensor([3.625]))
    torch.testing.assert_close(q_of_actions(bqv, actions, torch.tensor([[False, False]])), torch.tensor([-1.5]))


def _hand_masks():
    return dict(
        node=np.array([[True, True], [True, False]]),
        block=np.array([[False, True, True], [False, False, True]]),
        max_level=np.array([2, 3]),  # task 0 may use 3 levels (node 1), task 1 only 2 (node 0)
        carrier=np.array([True, False]),
        ready=np.array([True, True]),
    )


def test_max_q_respects_masks_and_greedy_action_matches():
    bq = _hand_branch_q()
    m = _hand_masks()
    # task 0: node max 4, block max over {1,2} 3, share max over levels 1..3 = 9, carrier {0} -2
    # task 1: node {0} 2, block {2} 6, share levels 1..2 -> 3, carrier {0} 1
    expected = (4 + 3 + 9 - 2) / 4 + (2 + 6 + 3 + 1) / 4
    torch.testing.assert_close(max_q(bq, m), torch.tensor([expected]))
    a = greedy_action(bq, m)
    assert a.tolist() == [[1, 1, 2, 0], [0, 2, 1, 0]]
    ready = torch.tensor([[True, True]])
    torch.testing.assert_close(q_of_actions(bq, torch.from_numpy(a)[None], ready), torch.tensor([expected]))


def test_q_at_argmax_uses_online_argmax_and_target_values():
    online = _hand_branch_q()
    target = BranchQ(*(-v for v in online))  # the target disagrees everywhere
    m = _hand_masks()
    # online argmax: task 0 (1, 1, 2, 0), task 1 (0, 2, 1, 0); target values there:
    t0 = (-4 - 3 - 9 + 2) / 4
    t1 = (-2 - 6 - 3 - 1) / 4
    torch.testing.assert_close(q_at_argmax(target, online, m), torch.tensor([t0 + t1]))
    # and it differs from the target's own max
    assert not torch.allclose(q_at_argmax(target, online, m), max_q(target, m))
