"""Deep Q-learning agents on the graph state: DDQN and D²QN (Sec 4.3, Eqs 16–19).

Explained in the book's chapter "Deep Q-learning on the graph"; the network is
:class:`dcicore.nets.GCNQNetwork`, the pool :class:`dcicore.replay.ReplayBuffer`.

* **DDQN** (``double=True, dueling=False``): ε-greedy exploration (ε decays linearly from
  ``eps_start`` to ``eps_end`` over ``eps_decay_steps`` acting steps, drawn independently for
  every ready task), double-DQN target (van Hasselt et al., 2016).
* **D²QN** (``double=True, dueling=True, param_noise=True``): dueling branches (dueling double
  DQN) explored with adaptive parameter-space noise (Plappert et al., 2018), as the paper's
  D²QN. :func:`dcicore.train.train` follows ``AgentConfig.d2qn_param_noise`` (default True);
  False gives a biased ε-greedy variant, which learned better at N = 5.

Every :meth:`DQNAgent.update` follows one fixed order:

1. sample a minibatch of J transitions from the replay buffer;
2. target (Eq 17): y = r·reward_scale + γ (1 − done) Q_θ'(s', argmax_a' Q_θ(s', a')) for double
   DQN (argmax by the online network, value by the target network; both in evaluation mode),
   or max_a' Q_θ'(s', a') without ``double``; the max/argmax respect the next state's masks;
3. loss (Eq 18): squared error between y and the online network's joint value Q_θ(s, a)
   (training mode: batch norm uses the minibatch's statistics) — the paper's MSE
   (``loss="huber"``: Huber). Q is V(s) + Σ over ready tasks of the mean chosen branch value
   (see :class:`~dcicore.nets.GCNQNetwork`), so regressing the joint value credits each task
   with its share of the slot's reward (``loss_on="joint"``, the default). # NOTE:
   ``loss_on="branches"`` is BDQ's per-branch loss (every chosen branch value regressed onto
   y); it suits a mean over tasks, not the sum used here, and is kept for comparison;
4. one Adam step (Eq 19), gradients clipped to norm ``grad_clip``;
5. # NOTE: every ``target_update_every`` gradient steps the target network is replaced by a
   copy of the online one (hard update, θ' ← θ).

Exploration (DDQN, CERL's RL agent): ε is drawn independently for every ready task; an
exploring task draws every branch uniformly over its valid choices, except the share index,
drawn as floor(levels·u^share_explore_power) with u ~ U[0, 1) (power 2: median index 25 of
100), biased toward the low indices. *Named choice*: with relative shares (index 0 = just fast
enough) low indices are the cheap ones, and energy grows with the share squared (Eq 4).
Likewise the block end is drawn as the last valid layer minus floor(count·u^block_explore_power)
(power 1: uniform; >1 favours long blocks, since a stage holds its node for whole slots and many
short blocks miss the deadline).
Rewards are Eq 13's, multiplied by ``reward_scale`` before learning (the scale only rescales Q).
``done`` passed to :meth:`DQNAgent.observe` should be ``terminated``: the environment only
truncates, and a truncated episode still bootstraps.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from dcicore.config import SystemConfig
from dcicore.graph import obs_to_graph
from dcicore.nets import (
    BranchQ,
    GCNQNetwork,
    _as_masks,
    _full_share,
    compact_actions,
    compact_masks,
    greedy_action,
    max_q_compact,
    q_at_argmax_compact,
    q_of_actions_compact,
    _task_mean,
)
from dcicore.replay import ReplayBuffer

__all__ = ["DQNAgent", "adapt_sigma", "noise_threshold", "perturb_params", "greedy_policy"]


def greedy_policy(q_net):
    """A callable f(env) -> action acting greedily with ``q_net`` (evaluation mode, masked
    argmax of every branch); accepted by :func:`dcicore.baselines.evaluate`.

    It reads the environment's current observation through ``env._observe()`` (the policy
    interface passes only the environment).
    """

    def act(env):
        env = getattr(env, "unwrapped", env)
        if q_net.training:
            q_net.eval()
        with torch.inference_mode():
            bq = q_net(obs_to_graph(env._observe()))
        return greedy_action(bq, env.action_masks())

    return act


def noise_threshold(eps: float, branch_sizes) -> float:
    """δ of adaptive parameter noise: the KL that ε-greedy would cause, −log(1 − ε + ε/|A|),
    averaged over the branches (|A| = number of choices of each branch)."""
    return float(np.mean([-math.log(1.0 - eps + eps / n) for n in branch_sizes]))


def adapt_sigma(sigma: float, distance: float, delta: float, factor: float = 1.01) -> float:
    """Plappert et al.'s rule: shrink σ (÷ factor) when the perturbed policy is farther than δ
    from the unperturbed one, grow it (× factor) otherwise."""
    return sigma / factor if distance > delta else sigma * factor


def perturb_params(net, sigma: float, generator: torch.Generator):
    """A copy of ``net`` with θ + N(0, σ²) on every parameter except normalization layers."""
    noisy = copy.deepcopy(net).eval()
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            if not name.startswith("norms."):
                p.add_(torch.randn(p.shape, generator=generator) * sigma)
    return noisy


def _policy_kl(bq_a: BranchQ, bq_b: BranchQ, masks_c) -> float:
    """Mean over ready tasks and branches of KL(softmax Q_a || softmax Q_b) on valid choices."""
    kls = []
    for va, vb, m in zip(bq_a, bq_b, masks_c[:4]):
        la = torch.log_softmax(va.masked_fill(~m, float("-inf")), -1)
        lb = torch.log_softmax(vb.masked_fill(~m, float("-inf")), -1)
        pa = la.exp()
        kls.append(torch.where(m, pa * (la - lb), torch.zeros(())).sum(-1))
    return float(torch.stack(kls).mean()) if kls[0].numel() else 0.0


class DQNAgent:
    """A GCN Q-network agent (DDQN or D²QN) with its own replay buffer ``self.replay``."""

    def __init__(self, config: SystemConfig, *, double=True, dueling=False, param_noise=False,
                 gamma=0.95, lr=1e-3, batch_size=64, buffer_size=20000, reward_scale=0.1,
                 eps_start=1.0, eps_end=0.05, eps_decay_steps=2000, target_update_every=200,
                 noise_target_eps=0.1, seed=0, hidden=(64, 128, 256), loss="mse", grad_clip=10.0,
                 learning_starts=None, noise_sigma=0.05, noise_batch=32, loss_on="joint",
                 share_explore_power=2.0, block_explore_power=1.0):
        if loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {loss!r}")
        if loss_on not in ("branches", "joint"):
            raise ValueError(f"loss_on must be 'branches' or 'joint', got {loss_on!r}")
        self.loss_on = loss_on
        if not share_explore_power > 0:
            raise ValueError(f"share_explore_power must be > 0, got {share_explore_power!r}")
        self.share_explore_power = float(share_explore_power)
        if not block_explore_power > 0:
            raise ValueError(f"block_explore_power must be > 0, got {block_explore_power!r}")
        self.block_explore_power = float(block_explore_power)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.config = config
        self.double, self.dueling, self.param_noise = bool(double), bool(dueling), bool(param_noise)
        self.gamma, self.lr, self.batch_size = float(gamma), float(lr), int(batch_size)
        self.reward_scale = float(reward_scale)
        self.eps_start, self.eps_end, self.eps_decay_steps = float(eps_start), float(eps_end), int(eps_decay_steps)
        self.target_update_every = int(target_update_every)
        self.noise_target_eps = float(noise_target_eps)
        self.loss_kind, self.grad_clip = loss, float(grad_clip)
        self.learning_starts = int(learning_starts if learning_starts is not None else batch_size)
        self.noise_batch = int(noise_batch)
        self.seed = int(seed)
        seeds = np.random.SeedSequence(self.seed).spawn(4)
        self.rng = np.random.default_rng(seeds[0])
        self.generator = torch.Generator().manual_seed(int(seeds[1].generate_state(1)[0]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeds[2].generate_state(1)[0]))
            self.q_net = GCNQNetwork(config, hidden=hidden, dueling=self.dueling)
        self.q_net.eval()
        self.target_net = copy.deepcopy(self.q_net).eval()
        for p in self.target_net.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q_net.parameters(), lr=self.lr)
        self.replay = ReplayBuffer(buffer_size, seed=int(seeds[3].generate_state(1)[0]))
        self.steps = 0  # acting steps with exploration
        self.updates = 0  # gradient steps
        self.episodes = 0
        self.sigma = float(noise_sigma)
        self.noise_delta = noise_threshold(
            self.noise_target_eps,
            (config.num_nodes, config.num_layers, config.share_levels, config.num_subcarriers),
        )
        self.noise_log: list = []  # (episode, sigma, distance) at every adaptation
        self.perturbed = perturb_params(self.q_net, self.sigma, self.generator) if self.param_noise else None

    # ------------------------------------------------------------------ acting
    @property
    def epsilon(self) -> float:
        """ε of ε-greedy now (linear decay over acting steps); 0 with parameter noise."""
        if self.param_noise:
            return 0.0
        frac = min(1.0, self.steps / max(self.eps_decay_steps, 1))
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    def on_episode_start(self) -> None:
        """Call at every reset. With parameter noise: adapt σ on a replay sample, then draw the
        perturbed network used for acting in this episode."""
        self.episodes += 1
        if not self.param_noise:
            return
        if len(self.replay) >= self.noise_batch:
            probe = perturb_params(self.q_net, self.sigma, self.generator)
            distance = self.noise_distance(probe)
            self.noise_log.append((self.episodes, self.sigma, distance))
            self.sigma = adapt_sigma(self.sigma, distance, self.noise_delta)
        self.perturbed = perturb_params(self.q_net, self.sigma, self.generator)

    def noise_distance(self, perturbed) -> float:
        """Mean KL between the branch policies softmax(Q) of the online and a perturbed network
        over ``noise_batch`` states of the replay buffer."""
        tr = self.replay.sample(self.noise_batch, rng=self.rng)
        masks_c = compact_masks(tr.masks, tr.graph)
        with torch.inference_mode():
            a = self.q_net.eval().forward_compact(tr.graph)
            b = perturbed.eval().forward_compact(tr.graph)
        masks_c = _full_share(masks_c, a.share.shape[-1])
        return _policy_kl(a, b, masks_c)

    def act(self, env, obs, explore: bool = True) -> np.ndarray:
        """(M, 4) action for ``obs``: greedy on the masked branch values; with ``explore``,
        ε-greedy per ready task (DDQN) or greedy with the perturbed network (D²QN)."""
        env = getattr(env, "unwrapped", env)
        masks = env.action_masks()
        net = self.perturbed if (explore and self.param_noise) else self.q_net
        graph = obs_to_graph(obs)
        if net.training:
            net.eval()
        with torch.inference_mode():
            bq = net(graph)
        action = greedy_action(bq, masks)
        if explore:
            eps = self.epsilon
            self.steps += 1
            if eps > 0:
                action = self._explore(action, masks, eps)
        return action

    def _explore(self, action, masks, eps):
        ready = np.flatnonzero(masks["ready"])
        pick = ready[self.rng.random(ready.size) < eps]
        if pick.size == 0:
            return action
        m = _as_masks(masks, self.config.share_levels)
        action = action.copy()
        for col, mk in enumerate(m[:4]):
            valid = mk[0].numpy()[pick]  # (picked, choices)
            if col == 2:  # NOTE: share index biased toward low values (see the module docstring)
                top = valid.sum(-1)  # valid levels are 1..top
                u = self.rng.random(pick.size) ** self.share_explore_power
                action[pick, col] = np.minimum((u * top).astype(np.int64), top - 1)
                continue
            if col == 1 and self.block_explore_power != 1.0:  # block end biased toward the last layer
                count = valid.sum(-1)  # valid block ends are the last `count` layers
                u = self.rng.random(pick.size) ** self.block_explore_power
                back = np.minimum((u * count).astype(np.int64), count - 1)
                action[pick, col] = valid.shape[1] - 1 - back
                continue
            scores = np.where(valid, self.rng.random(valid.shape), -1.0)
            action[pick, col] = scores.argmax(-1)
        return action

    def policy(self):
        """A callable f(env) -> action: greedy with the online network, no exploration (for
        :func:`dcicore.baselines.evaluate`)."""
        return greedy_policy(self.q_net)

    # ------------------------------------------------------------------ learning
    def observe(self, obs, action, reward, next_obs, done, masks, next_masks) -> None:
        """Store one transition in the agent's replay buffer."""
        self.replay.add(obs, action, reward, next_obs, done, masks, next_masks)

    def sync_target(self) -> None:
        """Hard update θ' ← θ (parameters and batch-norm statistics)."""
        self.target_net.load_state_dict(self.q_net.state_dict())

    def td_target(self, transitions) -> torch.Tensor:
        """y (J,) of Eq 17 for a minibatch (double DQN if ``self.double``)."""
        g2 = transitions.next_graph
        masks_c = compact_masks(transitions.next_masks, g2)
        with torch.no_grad():
            tq = self.target_net.eval().forward_compact(g2).map(lambda v: v[None])
            if self.double:
                was = self.q_net.training
                oq = self.q_net.eval().forward_compact(g2).map(lambda v: v[None])
                self.q_net.train(was)
                q_next = q_at_argmax_compact(tq, oq, masks_c, g2)[0]
            else:
                q_next = max_q_compact(tq, masks_c, g2)[0]
            r = transitions.rewards.float() * self.reward_scale
            return r + self.gamma * (1.0 - transitions.dones.float()) * q_next

    def compute_loss(self, transitions):
        """Eq 18 on a minibatch: returns ``(loss, q_sa, y)`` with q_sa the joint Q(s, a) (J,).

        ``loss_on="joint"`` (default, Eq 18 literally): the squared error of the joint Q(s, a) =
        V(s) + Σ_q mean_b Q_b(q, a_qb) against y, so each task's term learns its part of the
        slot's summed reward (VDN). The split of a task's term between its four branches is
        left free (a constant moved from one branch to another changes neither Q nor the argmax).
        ``loss_on="branches"`` (BDQ's loss, kept for comparison): every chosen branch value of
        every ready task is regressed onto y (a state with no ready task regresses V(s)), the
        squared errors averaged within a transition, then over the batch.
        The online network runs in training mode (batch norm on the minibatch) and is left in
        evaluation mode.
        """
        y = self.td_target(transitions)
        g = transitions.graph
        self.q_net.train()
        bq = self.q_net.forward_compact(g).map(lambda v: v[None])
        self.q_net.eval()
        a_c = compact_actions(transitions.actions, g)
        q_sa = q_of_actions_compact(bq, a_c, g)[0]  # (J,)
        err = F.mse_loss if self.loss_kind == "mse" else F.smooth_l1_loss
        if self.loss_on == "joint":
            return err(q_sa, y), q_sa, y
        chosen = torch.stack([torch.gather(v[0], 1, a_c[:, i, None])[:, 0] for i, v in enumerate(bq)], 1)  # (Q, 4)
        per_task = err(chosen, y[g.ready_graph, None].expand_as(chosen), reduction="none").mean(1)  # (Q,)
        idle_err = err(bq.idle[0], y, reduction="none")  # (J,) used where nothing is ready
        loss = _task_mean(per_task[None], g, idle_err[None])[0].mean()
        return loss, q_sa, y

    def update(self) -> dict:
        """One gradient step on a replay minibatch (see the module docstring for the order).

        Returns ``loss``, ``q_mean`` (mean Q(s, a) of the batch), ``target_mean``, ``updates``
        (and ``sigma`` with parameter noise); ``loss``/``q_mean`` are NaN and nothing changes
        while the buffer holds fewer than ``learning_starts`` transitions.
        """
        if len(self.replay) < max(self.learning_starts, 1):
            return dict(loss=float("nan"), q_mean=float("nan"), target_mean=float("nan"),
                        updates=self.updates)
        tr = self.replay.sample(self.batch_size, rng=self.rng)
        loss, q_sa, y = self.compute_loss(tr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_update_every == 0:  # NOTE: hard target update
            self.sync_target()
        out = dict(loss=float(loss.detach()), q_mean=float(q_sa.detach().mean()),
                   target_mean=float(y.mean()), updates=self.updates)
        if self.param_noise:
            out["sigma"] = self.sigma
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume (tensors and Python values; loads with
        ``torch.load(weights_only=True)``)."""
        return dict(
            q_net=self.q_net.state_dict(), target_net=self.target_net.state_dict(),
            perturbed=None if self.perturbed is None else self.perturbed.state_dict(),
            optimizer=self.optimizer.state_dict(), replay=self.replay.state_dict(),
            rng=self.rng.bit_generator.state, generator=self.generator.get_state(),
            steps=self.steps, updates=self.updates, episodes=self.episodes, sigma=self.sigma,
            noise_log=[list(x) for x in self.noise_log],
        )

    def load_state_dict(self, state: dict) -> None:
        """Restore an agent saved by :meth:`state_dict` (same constructor arguments)."""
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        if state.get("perturbed") is not None:
            self.perturbed = copy.deepcopy(self.q_net).eval()
            self.perturbed.load_state_dict(state["perturbed"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.steps, self.updates, self.episodes = int(state["steps"]), int(state["updates"]), int(state["episodes"])
        self.sigma = float(state["sigma"])
        self.noise_log = [tuple(x) for x in state["noise_log"]]

