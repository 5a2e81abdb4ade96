"""Replay buffer and the DDQN / D²QN agents (dcicore.replay, dcicore.dqn)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from dcicore.config import SystemConfig
from dcicore.dqn import DQNAgent, adapt_sigma, noise_threshold, perturb_params
from dcicore.env import DCIEnv
from dcicore.graph import collate
from dcicore.nets import BranchQ, masks_to_tensors
from dcicore.replay import ReplayBuffer




def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _rollout(cfg, steps, seed=0, episode_slots=None):
    """(obs, action, reward, next_obs, done, masks, next_masks) of a random policy."""
    env = DCIEnv(cfg)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    masks = env.action_masks()
    out, ep = [], 0
    highs = (cfg.num_nodes, cfg.num_layers, cfg.share_levels, cfg.num_subcarriers)
    for _ in range(steps):
        a = np.stack([rng.integers(0, n, cfg.max_tasks) for n in highs], 1)
        nxt, r, term, trunc, _ = env.step(a)
        nmasks = env.action_masks()
        out.append((obs, a, r, nxt, term, masks, nmasks))
        obs, masks = nxt, nmasks
        if trunc:
            ep += 1
            obs, _ = env.reset(seed=seed + ep)
            masks = env.action_masks()
    return out


# ---------------------------------------------------------------------- replay
def test_replay_rebuilds_states_and_masks_exactly():
    cfg = SystemConfig(num_devices=3, episode_slots=5)
    data = _rollout(cfg, 12)
    buf = ReplayBuffer(50, seed=0)
    for t in data:
        buf.add(*t)
    assert len(buf) == 12
    idx = [0, 4, 11]
    tr = buf.get(idx)
    ref = collate([data[i][0] for i in idx])
    ref2 = collate([data[i][3] for i in idx])
    for got, want in ((tr.graph, ref), (tr.next_graph, ref2)):
        assert torch.equal(got.x, want.x)
        assert torch.equal(got.adj.to_dense(), want.adj.to_dense())
        assert torch.equal(got.ready, want.ready) and torch.equal(got.task_rows, want.task_rows)
    want_m = masks_to_tensors([data[i][6] for i in idx])
    for a, b in zip(tr.next_masks, want_m):
        assert torch.equal(a, b)
    assert tr.rewards.tolist() == pytest.approx([data[i][2] for i in idx])
    assert tr.actions.shape == (3, cfg.max_tasks, 4)
    # three episodes of distinct scenarios: three link matrices stored, not 24
    assert sum(m is not None for m in buf._links) == 3


def test_replay_overwrites_oldest_and_frees_links():
    cfg = SystemConfig(num_devices=2, episode_slots=3)
    data = _rollout(cfg, 9)  # three episodes
    buf = ReplayBuffer(4, seed=0)
    for t in data:
        buf.add(*t)
    assert len(buf) == 4 and buf.pos == 9 % 4
    assert sum(m is not None for m in buf._links) == 2  # the first episode's links are freed
    tr = buf.get([buf.pos])  # the oldest kept transition is the 6th added
    assert torch.equal(tr.graph.x, collate([data[5][0]]).x)


def test_replay_state_dict_roundtrip_with_weights_only_load():
    cfg = SystemConfig(num_devices=2, episode_slots=4)
    data = _rollout(cfg, 10)
    buf = ReplayBuffer(8, seed=3)
    for t in data:
        buf.add(*t)
    state = _roundtrip(buf.state_dict())
    other = ReplayBuffer(1, seed=99)
    other.load_state_dict(state)
    a, b = buf.sample(5), other.sample(5)  # same generator state -> same draw
    assert np.array_equal(a.indices, b.indices)
    assert torch.equal(a.graph.x, b.graph.x) and torch.equal(a.next_graph.adj.to_dense(), b.next_graph.adj.to_dense())
    assert torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards)
    other.add(*data[0])  # keeps working after a load
    assert len(other) == 8


def test_replay_rejects_an_observation_it_cannot_store_exactly():
    cfg = SystemConfig(num_devices=2)
    obs, a, r, nxt, d, m, m2 = _rollout(cfg, 1)[0]
    bad = dict(obs)
    tf = obs["task_features"].copy()
    tf[3, 6] += 0.25  # slack that differs between layers of one task
    bad["task_features"] = tf
    with pytest.raises(ValueError, match="task_features"):
        ReplayBuffer(4).add(bad, a, r, nxt, d, m, m2)


# ---------------------------------------------------------------------- TD target and loss by hand
def _hand_obs(cfg, tasks):
    """Observation of N = 1 built by hand; ``tasks``: list of (row, next_layer, ready)."""
    env = DCIEnv(cfg)
    n1, M, L, S = cfg.num_nodes, cfg.max_tasks, cfg.num_layers, cfg.num_subcarriers
    tf = np.zeros((M, L, 8), np.float32)
    tf[..., 0] = env._layer_workload.reshape(M, L)
    tf[..., 1] = env._layer_output.reshape(M, L)
    loc = np.full(M, -1, np.int64)
    ready = np.zeros(M, np.int8)
    assign = np.full((M, L), -1, np.int64)
    for row, nl, rdy in tasks:
        tf[row, :nl, 2] = 1
        tf[row, nl:, 4] = 1
        tf[row, nl, 5] = 1
        tf[row, :, 6] = 0.5
        tf[row, :, 7] = rdy
        loc[row], ready[row] = 1, rdy
        assign[row, :nl] = 1
    return dict(
        node_features=np.full((n1, 6), 0.5, np.float32),
        node_links=np.array([[0.0, 0.4], [0.4, 0.0]], np.float32),
        task_features=tf.reshape(M * L, 8), layer_edges=env.layer_edges.copy(),
        assignment=assign.ravel(), task_location=loc, task_ready=ready,
        carrier_free=np.ones(S, np.int8),
    )


def _hand_masks(cfg, tasks, max_level):
    M, L, n1 = cfg.max_tasks, cfg.num_layers, cfg.num_nodes
    node = np.zeros((M, n1), bool)
    block = np.zeros((M, L), bool)
    ready = np.zeros(M, bool)
    for row, nl, rdy in tasks:
        if rdy:
            node[row], block[row, nl:], ready[row] = True, True, True
    return dict(node=node, block=block, max_level=np.array(max_level), carrier=np.ones(cfg.num_subcarriers, bool),
                ready=ready)


class _StubQ(nn.Module):
    """Branch values that depend only on the choice index (+ a learnable offset c); the idle
    value of a state with no ready task is ``idle``."""

    def __init__(self, node, block, share, carrier, idle):
        super().__init__()
        self.c = nn.Parameter(torch.zeros(()))
        self.values = [torch.tensor(v, dtype=torch.float32) for v in (node, block, share, carrier)]
        self.idle = idle

    def forward_compact(self, graph):
        q = graph.ready_graph.numel()
        out = BranchQ(*(v.expand(q, -1) + self.c for v in self.values))
        return out.with_idle(torch.full((graph.num_graphs,), self.idle) + self.c)


def test_td_target_and_loss_on_a_hand_made_batch():
    cfg = SystemConfig(num_devices=1)  # nodes 0 (MEC) and 1; M = 3 task rows; L = 8; S = 10
    agent = DQNAgent(cfg, batch_size=2, gamma=0.95, reward_scale=0.1, seed=0)
    agent.q_net = _StubQ([1.0, 3.0], np.arange(8) * 0.1, np.arange(100) * 0.01, np.arange(10) * 0.1, 1.5)
    agent.target_net = _StubQ([5.0, 2.0], 0.7 - np.arange(8) * 0.1, -np.arange(100) * 0.01, -np.arange(10) * 0.1, 7.0)
    s1, n1 = [(0, 0, 1)], [(0, 1, 1)]
    s2, n2 = [(0, 0, 1), (1, 0, 1)], [(0, 2, 1)]
    a1 = np.zeros((3, 4), np.int64)
    a1[0] = (1, 0, 9, 0)
    a2 = np.zeros((3, 4), np.int64)
    a2[0], a2[1] = (0, 7, 49, 3), (1, 2, 9, 1)
    buf = agent.replay
    buf.add(_hand_obs(cfg, s1), a1, -2.0, _hand_obs(cfg, n1), False,
            _hand_masks(cfg, s1, [100, 100]), _hand_masks(cfg, n1, [50, 20]))
    buf.add(_hand_obs(cfg, s2), a2, -10.0, _hand_obs(cfg, n2), True,
            _hand_masks(cfg, s2, [100, 100]), _hand_masks(cfg, n2, [50, 20]))
    s3, n3 = [(1, 3, 1)], [(1, 4, 0)]  # after it, nothing is ready: the idle value bootstraps
    a3 = np.zeros((3, 4), np.int64)
    a3[1] = (1, 1, 0, 2)  # block end 1 < next layer 3: stored as 3 (the environment's repair)
    buf.add(_hand_obs(cfg, s3), a3, -1.0, _hand_obs(cfg, n3), False,
            _hand_masks(cfg, s3, [100, 100]), _hand_masks(cfg, n3, [50, 20]))
    s4, n4 = [(2, 5, 0)], [(2, 6, 1)]  # nothing to decide in s: Q(s, a) is the idle value
    buf.add(_hand_obs(cfg, s4), np.zeros((3, 4), np.int64), -0.5, _hand_obs(cfg, n4), False,
            _hand_masks(cfg, s4, [100, 100]), _hand_masks(cfg, n4, [100, 100]))
    tr = buf.get([0, 1, 2, 3])
    # transition 1: online argmax on s' = node 1, block 7, share index 49 (top level 50),
    # carrier 9; target values there: 2, 0.0, -0.49, -0.9 -> mean 0.1525, plus V(s') = 7
    y1 = -2.0 * 0.1 + 0.95 * (7.0 + (2.0 + 0.0 - 0.49 - 0.9) / 4)
    y2 = -10.0 * 0.1  # done: no bootstrap
    y3 = -1.0 * 0.1 + 0.95 * 7.0  # nothing ready in s': the target's V(s') alone
    # transition 4: s' ready at layer 6 with levels up to 100: 2 + 0.7 - 0.99 - 0.9
    y4 = -0.5 * 0.1 + 0.95 * (7.0 + (2.0 + 0.0 - 0.99 - 0.9) / 4)
    torch.testing.assert_close(agent.td_target(tr), torch.tensor([y1, y2, y3, y4]))
    # without double DQN the target's own max is used: node 5, block (j >= 1) 0.6, share 0, carrier 0
    agent.double = False
    y1_max = -0.2 + 0.95 * (7.0 + (5.0 + 0.6 + 0.0 + 0.0) / 4)
    torch.testing.assert_close(agent.td_target(tr)[[0, 1, 2]], torch.tensor([y1_max, y2, y3]))
    agent.double = True
    # Q(s, a) of each transition: V(s) = 1.5 plus, per ready task, the mean of its chosen values
    chosen = [[[3.0, 0.0, 0.09, 0.0]],
              [[1.0, 0.7, 0.49, 0.3], [3.0, 0.2, 0.09, 0.1]],
              [[3.0, 0.3, 0.0, 0.2]],  # block end 1 was stored as the next layer, 3
              []]  # nothing ready in s: V(s) alone
    ys = [y1, y2, y3, y4]
    qs = [1.5 + sum(np.mean(t) for t in c) for c in chosen]
    # default loss (Eq 18 literally): the mean squared error of the joint Q
    loss, q_sa, y = agent.compute_loss(tr)
    torch.testing.assert_close(q_sa, torch.tensor(qs, dtype=torch.float32))
    assert float(loss.detach()) == pytest.approx(np.mean([(q - y) ** 2 for q, y in zip(qs, ys)]), rel=1e-6)
    loss.backward()  # V and every branch value carry + c: dQ/dc = 1 + ready tasks
    grad = np.mean([2 * (q - y) * (1 + len(c)) for q, y, c in zip(qs, ys, chosen)])
    assert float(agent.q_net.c.grad) == pytest.approx(grad, rel=1e-5)
    # BDQ-style loss: every chosen branch value regressed onto y; V(s) where nothing is ready
    agent.loss_on = "branches"
    chosen[3] = [[1.5]]
    per_transition = [np.mean([np.mean([(v - y) ** 2 for v in t]) for t in c]) for c, y in zip(chosen, ys)]
    loss, _, _ = agent.compute_loss(tr)
    assert float(loss.detach()) == pytest.approx(np.mean(per_transition), rel=1e-6)


# ---------------------------------------------------------------------- parameter noise
def test_noise_threshold_formula():
    eps = 0.1
    expected = np.mean([-math.log(1 - eps + eps / n) for n in (11, 8, 100, 10)])
    assert noise_threshold(eps, (11, 8, 100, 10)) == pytest.approx(expected)


def test_sigma_adaptation_direction():
    assert adapt_sigma(0.2, distance=0.5, delta=0.1) == pytest.approx(0.2 / 1.01)
    assert adapt_sigma(0.2, distance=0.01, delta=0.1) == pytest.approx(0.2 * 1.01)


def test_d2qn_agent_shrinks_large_noise_and_grows_tiny_noise():
    cfg = SystemConfig(num_devices=2, episode_slots=6)
    agent = DQNAgent(cfg, dueling=True, param_noise=True, noise_batch=8, seed=1)
    for t in _rollout(cfg, 12):
        agent.observe(*t)
    agent.sigma = 5.0  # a wildly perturbed policy: far beyond δ
    agent.on_episode_start()
    assert agent.sigma == pytest.approx(5.0 / 1.01)
    assert agent.noise_log[-1][2] > agent.noise_delta
    agent.sigma = 1e-7  # almost no perturbation: below δ
    agent.on_episode_start()
    assert agent.sigma == pytest.approx(1e-7 * 1.01)
    assert agent.noise_log[-1][2] < agent.noise_delta
    # normalization layers are not perturbed, everything else is
    noisy = perturb_params(agent.q_net, 0.1, torch.Generator().manual_seed(0))
    for (name, p), q in zip(noisy.named_parameters(), agent.q_net.parameters()):
        assert torch.equal(p, q) == name.startswith("norms."), name


# ---------------------------------------------------------------------- smoke runs and checkpoints
def _train(agent, cfg, steps, seed=0):
    env = DCIEnv(cfg)
    obs, _ = env.reset(seed=seed)
    agent.on_episode_start()
    masks = env.action_masks()
    logs = []
    for t in range(steps):
        a = agent.act(env, obs)
        nxt, r, term, trunc, _ = env.step(a)
        nmasks = env.action_masks()
        agent.observe(obs, a, r, nxt, term, masks, nmasks)
        obs, masks = nxt, nmasks
        logs.append(agent.update())
        if trunc:
            obs, _ = env.reset(seed=seed + t + 1)
            masks = env.action_masks()
            agent.on_episode_start()
    return logs, env, obs


def test_ddqn_smoke_run_has_finite_loss_and_syncs_target():
    cfg = SystemConfig(num_devices=3, episode_slots=20)
    agent = DQNAgent(cfg, batch_size=16, eps_decay_steps=200, target_update_every=50, seed=0)
    logs, env, obs = _train(agent, cfg, 240)
    losses = [x["loss"] for x in logs if not math.isnan(x["loss"])]
    assert len(losses) >= 200 and all(math.isfinite(v) for v in losses)
    assert agent.updates == len(losses) and agent.epsilon == pytest.approx(0.05)
    # hard update every 50 gradient steps: the target equals the online net only right after one
    same = all(torch.equal(p, q) for p, q in zip(agent.q_net.parameters(), agent.target_net.parameters()))
    assert same == (agent.updates % 50 == 0)
    agent.sync_target()
    assert all(torch.equal(p, q) for p, q in zip(agent.q_net.parameters(), agent.target_net.parameters()))
    a = agent.policy()(env)
    assert a.shape == (cfg.max_tasks, 4)


def test_agent_checkpoint_resumes_exactly():
    cfg = SystemConfig(num_devices=2, episode_slots=10)
    kw = dict(dueling=True, param_noise=True, batch_size=8, noise_batch=8, seed=4)
    agent = DQNAgent(cfg, **kw)
    _, env, obs = _train(agent, cfg, 30)
    state = _roundtrip(agent.state_dict())
    twin = DQNAgent(cfg, **kw)
    twin.load_state_dict(state)
    assert np.array_equal(agent.act(env, obs, explore=False), twin.act(env, obs, explore=False))
    assert agent.update() == twin.update()
    agent.on_episode_start()
    twin.on_episode_start()
    assert agent.sigma == twin.sigma
    assert np.array_equal(agent.act(env, obs), twin.act(env, obs))


# ---------------------------------------------------------------------- exploration
@pytest.mark.parametrize("share_power, block_power", [(1.0, 1.0), (2.0, 3.0)])
def test_exploration_draws_valid_choices_with_the_documented_bias(share_power, block_power):
    from dcicore.env import DCIEnv

    cfg = SystemConfig(num_devices=5, share_action="relative")
    agent = DQNAgent(cfg, seed=1, share_explore_power=share_power, block_explore_power=block_power)
    env = DCIEnv(cfg)
    env.reset(seed=0, options={"initial_tasks": [1] * cfg.num_devices})
    masks = env.action_masks()
    ready = np.flatnonzero(masks["ready"])
    assert ready.size == cfg.num_devices
    base = np.zeros((cfg.max_tasks, 4), np.int64)
    draws = np.stack([agent._explore(base, masks, 1.0)[ready] for _ in range(400)])  # (400, R, 4)
    assert np.all(masks["node"][ready, draws[..., 0]])  # every draw is valid
    assert np.all(masks["block"][ready, draws[..., 1]])
    share, block = draws[..., 2].ravel(), draws[..., 1].ravel()
    levels = cfg.share_levels
    # P(index < levels/4) = (1/4)^(1/power): 0.25 uniform, 0.5 with power 2
    assert np.mean(share < levels // 4) == pytest.approx(0.25 ** (1 / share_power), abs=0.06)
    # all tasks are at layer 0 here (8 valid ends): P(last layer) = P(u^p < 1/8) = (1/8)^(1/p)
    assert np.all(env.ready_mask() == masks["ready"])
    assert np.mean(block == cfg.num_layers - 1) == pytest.approx(0.125 ** (1 / block_power), abs=0.06)
