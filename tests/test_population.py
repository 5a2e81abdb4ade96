"""Population fitness of Eq 14 (dcicore.population): vectorized == reference == by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcicore.config import SystemConfig
from dcicore.env import DCIEnv
from dcicore.nets import GCNQNetwork, masks_to_tensors
from dcicore.population import (
    flatten_params,
    num_params,
    stack_params,
    td_fitness,
    td_fitness_loop,
    unflatten_into,
)
from dcicore.replay import ReplayBuffer




def _net(cfg, seed=0, dueling=False):
    torch.manual_seed(seed)
    net = GCNQNetwork(cfg, dueling=dueling)
    with torch.no_grad():
        for norm in net.norms:
            norm.running_mean.uniform_(-0.3, 0.3)
            norm.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _buffer(cfg, steps=30, seed=0):
    env = DCIEnv(cfg)
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(100, seed=seed)
    obs, _ = env.reset(seed=seed)
    masks = env.action_masks()
    highs = (cfg.num_nodes, cfg.num_layers, cfg.share_levels, cfg.num_subcarriers)
    for t in range(steps):
        a = np.stack([rng.integers(0, n, cfg.max_tasks) for n in highs], 1)
        nxt, r, term, trunc, _ = env.step(a)
        nmasks = env.action_masks()
        buf.add(obs, a, r, nxt, term or t % 7 == 6, masks, nmasks)  # a few dones, to test the mask
        obs, masks = nxt, nmasks
        if trunc:
            obs, _ = env.reset(seed=seed + t)
            masks = env.action_masks()
    return buf


def _population(net, k, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    base = flatten_params(net)
    thetas = base + sigma * torch.randn(k, base.numel(), generator=g)
    targets = base + sigma * torch.randn(k, base.numel(), generator=g)
    return thetas, targets


def test_flatten_unflatten_roundtrip():
    cfg = SystemConfig(num_devices=2)
    net = _net(cfg)
    vec = flatten_params(net)
    assert vec.shape == (num_params(net),) and num_params(net) == sum(p.numel() for p in net.parameters())
    other = _net(cfg, seed=1)
    assert not torch.equal(flatten_params(other), vec)
    unflatten_into(other, vec)
    assert torch.equal(flatten_params(other), vec)
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), other.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    views = stack_params(net, torch.stack([vec, 2 * vec]))
    assert torch.equal(views["convs.1.lin.weight"][1], 2 * net.convs[1].lin.weight)
    with pytest.raises(ValueError):
        unflatten_into(other, vec[:-1])


@pytest.mark.parametrize("dueling", [False, True])
def test_vectorized_fitness_equals_reference_loop(dueling):
    cfg = SystemConfig(num_devices=3)
    net = _net(cfg, dueling=dueling)
    tr = _buffer(cfg).sample(16, rng=np.random.default_rng(0))
    assert tr.graph.ready.any() and tr.next_graph.ready.any() and tr.dones.any()
    thetas, targets = _population(net, 5, 0.05, seed=2)
    fast = td_fitness(net, thetas, targets, tr, gamma=0.95, reward_scale=0.1)
    fast_one = td_fitness(net, thetas, targets, tr, gamma=0.95, reward_scale=0.1, chunk=1)
    ref = td_fitness_loop(net, thetas, targets, tr, gamma=0.95, reward_scale=0.1)
    assert fast.shape == (5,)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_one, ref, rtol=1e-5, atol=1e-5)
    assert fast.std() > 1e-3  # the individuals really differ


def test_fitness_is_minus_mean_squared_td_error_by_hand():
    cfg = SystemConfig(num_devices=2)
    net = _net(cfg, seed=3)
    buf = _buffer(cfg, steps=20, seed=5)
    ready = [i for i in range(len(buf)) if buf.get([i]).graph.ready.any()]
    done = [i for i in ready if buf.arrays["done"][i] > 0]
    idx = [i for i in ready if i not in done][:3] + done[:1]
    assert len(idx) == 4
    tr = buf.get(idx)
    thetas, targets = _population(net, 2, 0.2, seed=4)
    gamma, scale = 0.9, 0.5
    fit = td_fitness(net, thetas, targets, tr, gamma=gamma, reward_scale=scale)
    q_net, target_net = _net(cfg), _net(cfg)
    for norm_a, norm_b, norm_c in zip(q_net.norms, target_net.norms, net.norms):
        norm_a.load_state_dict(norm_c.state_dict())
        norm_b.load_state_dict(norm_c.state_dict())
    for i in range(2):
        unflatten_into(q_net, thetas[i])
        unflatten_into(target_net, targets[i])
        with torch.no_grad():
            q = q_net.forward_reference(tr.graph)
            q2 = target_net.forward_reference(tr.next_graph)
        errors = []
        for j, pos in enumerate(idx):
            # Q(s, a): V(s) plus, over ready tasks, the average of the 4 chosen branch values
            ready = np.flatnonzero(tr.ready[j].numpy())
            a = tr.actions[j]
            q_sa = float(q.idle[j]) + sum(np.mean([float(q[b][j, m, a[m, b]]) for b in range(4)]) for m in ready)
            # max_a' Q'(s', a'): V(s') plus the same sum of the masked branch-maxima averages
            m2 = masks_to_tensors([dict(
                node=np.unpackbits(buf.arrays["n_m_node"][pos], count=cfg.max_tasks * cfg.num_nodes).reshape(cfg.max_tasks, -1).astype(bool),
                block=np.unpackbits(buf.arrays["n_m_block"][pos], count=cfg.max_tasks * cfg.num_layers).reshape(cfg.max_tasks, -1).astype(bool),
                max_level=buf.arrays["n_m_level"][pos].astype(np.int64), carrier=buf.arrays["n_m_carrier"][pos],
                ready=buf.arrays["n_m_ready"][pos])])
            ready2 = np.flatnonzero(m2.ready[0].numpy())
            best = []
            for m in ready2:
                share_ok = np.arange(1, cfg.share_levels + 1) <= int(m2.share[0, m])
                valid = [m2.node[0, m].numpy(), m2.block[0, m].numpy(), share_ok, m2.carrier[0, m].numpy()]
                best.append(np.mean([float(q2[b][j, m][torch.from_numpy(valid[b])].max()) for b in range(4)]))
            q_next = float(q2.idle[j]) + sum(best)
            y = float(tr.rewards[j]) * scale + gamma * (1 - float(tr.dones[j])) * q_next
            errors.append((y - q_sa) ** 2)
        assert float(fit[i]) == pytest.approx(-np.mean(errors), rel=1e-5, abs=1e-6)
