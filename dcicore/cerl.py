"""CERL (Algorithm 1): a CEM population of GCN Q-networks, elite interaction, a DDQN agent and
RL injection.

Explained in the book's chapter "CERL: evolution meets Q-learning"; :mod:`dcicore.train` runs it.

One call of :meth:`CERL.generation` runs Algorithm 1 once, always in this order:

1. **Sample** (line 4): every individual except the injected RL one is redrawn from N(μ, Σ).
   Each individual i has its own target parameters θ'_i (VEB-RL's scheme): θ'_i is what slot i
   held at the last population target update (step 7), and the injected RL individual brings
   the RL agent's own target network θ'_RL.
2. **Fitness** (line 5): f(θ_i, θ'_i) = −E[(r + γ max_a' Q_θ'i(s', a') − Q_θi(s, a))²] (Eq 14)
   of all k individuals on the same J transitions drawn from the shared buffer D; the rewards
   are scaled by ``reward_scale`` as in the RL loss. Fitness is **maximised**.
3. **Elites and Eq 15** (lines 5–6): the top half (``num_elites``) by fitness update μ and the
   diagonal Σ with λ-weights and the damping ε (:mod:`dcicore.cem`).
4. **Elite interaction** (line 7): only the ``interacting_elites`` fittest individuals act
   greedily, ``elite_steps_per_generation`` slots each, and store their transitions in D.
5. **RL interaction and optimisation** (lines 8–14): the RL agent takes
   ``rl_steps_per_generation`` ε-greedy slots into D and ``rl_updates_per_generation``
   gradient steps of Eqs 17–19 (double-DQN target), updating its own target every
   ``target_update_every`` gradient steps (line 16, first half).
6. **RL injection** (line 15): θ_RL and θ'_RL replace the *worst* individual of this
   generation; that slot is kept (not redrawn) at the next sampling, so the RL network is
   judged by the same fitness as everyone else one generation later.
7. **Population target update** (line 16, second half): every H generations θ'_i ← θ_i for
   every slot except the freshly injected one (which keeps θ'_RL).

While D holds fewer than ``learning_starts`` transitions there is nothing to judge fitness on:
such *warm-up* generations run step 5 only (the RL agent explores, no gradient steps).

Deployment: :meth:`CERL.policy` returns the RL agent's greedy policy, the fittest individual's
greedy policy, or whichever of the two has the lower system cost on validation episodes
(``AgentConfig.deploy``; default ``"best"``, as VEB-RL reports the better of its RL and EA
policies). Validation seeds are disjoint from the evaluation seeds used for the curves.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from dcicore import cem
from dcicore.budgets import AgentConfig
from dcicore.config import SystemConfig
from dcicore.dqn import DQNAgent
from dcicore.env import DCIEnv
from dcicore.graph import obs_to_graph
from dcicore.nets import greedy_action
from dcicore.population import flatten_params, td_fitness, unflatten_into

__all__ = ["CERL", "EnvStream", "episode_seed", "make_dqn_agent", "greedy_policy", "rl_interact_and_learn",
           "ENV_STREAMS"]

#: stream ids: the RL agent's environment and one per interacting elite rank (elite r -> 1 + r)
ENV_STREAMS = {"rl": 0, "elite": 1}


def episode_seed(seed: int, epoch: int, stream: int, episode: int) -> int:
    """Seed of one training episode, a pure function of (run seed, epoch, stream, episode).

    Deriving every training episode's seed this way (instead of drawing it from a generator)
    means a run resumed at an epoch boundary sees exactly the episodes an uninterrupted run sees.
    """
    ss = np.random.SeedSequence([int(seed), int(epoch), int(stream), int(episode), 0xDC1])
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


class EnvStream:
    """An environment one actor steps through, episode after episode.

    ``begin_epoch(epoch)`` resets it with the epoch's first seed; when an episode is truncated
    (after ``episode_slots`` slots) the next one starts with the next seed. ``fresh`` is True
    right after a reset (so a D²QN agent can redraw its parameter noise).
    """

    def __init__(self, config: SystemConfig, seed: int, stream: int):
        self.env = DCIEnv(config)
        self.seed, self.stream = int(seed), int(stream)
        self.epoch = 0
        self.episode = 0
        self.obs = None
        self.masks = None
        self.fresh = False
        self.steps = 0

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.episode = int(epoch), 0
        self._reset()

    def _reset(self) -> None:
        self.obs, _ = self.env.reset(seed=episode_seed(self.seed, self.epoch, self.stream, self.episode))
        self.masks = self.env.action_masks()
        self.episode += 1
        self.fresh = True

    def step(self, action, sink) -> tuple:
        """Apply ``action``, hand the transition to ``sink(obs, a, r, next_obs, done, masks,
        next_masks)``, start a new episode if this one was truncated; returns (reward, info)."""
        obs, masks = self.obs, self.masks
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        next_masks = self.env.action_masks()
        # NOTE: episodes end by truncation only (a time limit, not a terminal state), so the
        # transition keeps bootstrapping: done = terminated = False.
        sink(obs, action, float(reward), next_obs, bool(terminated), masks, next_masks)
        self.steps += 1
        self.fresh = False
        if terminated or truncated:
            self._reset()
        else:
            self.obs, self.masks = next_obs, next_masks
        return float(reward), info


def make_dqn_agent(config: SystemConfig, agent: AgentConfig, seed: int, *, dueling=False,
                   param_noise=False) -> DQNAgent:
    """A DQN agent with the hyper-parameters of ``agent`` (double-DQN targets always)."""
    return DQNAgent(
        config, double=True, dueling=dueling, param_noise=param_noise, gamma=agent.gamma, lr=agent.lr,
        batch_size=agent.batch_size, buffer_size=agent.buffer_size, reward_scale=agent.reward_scale,
        eps_start=agent.eps_start, eps_end=agent.eps_end, eps_decay_steps=agent.eps_decay_steps,
        target_update_every=agent.target_update_every, noise_target_eps=agent.noise_target_eps,
        seed=seed, hidden=agent.hidden, learning_starts=agent.learning_starts,
        share_explore_power=agent.share_explore_power, block_explore_power=agent.block_explore_power,
    )


def greedy_policy(q_net):
    """A policy ``f(env, obs=None) -> action`` acting greedily with ``q_net`` (evaluation mode:
    masked argmax of every branch), the same rule as :meth:`DQNAgent.act` without exploration."""

    def act(env, obs=None):
        env = getattr(env, "unwrapped", env)
        obs = env._observe() if obs is None else obs
        with torch.inference_mode():
            bq = q_net.eval()(obs_to_graph(obs))
        return greedy_action(bq, env.action_masks())

    return act


def _stats(x: torch.Tensor) -> dict:
    x = x.double()
    return {
        "fitness_mean": float(x.mean()),
        "fitness_max": float(x.max()),
        "fitness_min": float(x.min()),
        "fitness_std": float(x.std(unbiased=False)),
    }


class CERL:
    """CERL learner (Algorithm 1). See the module docstring for the order of the steps.

    Parameters
    ----------
    config : SystemConfig
        The DCI system to learn on.
    agent : AgentConfig
        Hyper-parameters (population, CEM, RL).
    seed : int
        Makes every generator of the run (network init, CEM sampling, fitness batches,
        exploration, environment episodes).

    Attributes
    ----------
    rl : DQNAgent
        The RL agent; its replay buffer is the shared buffer D.
    thetas, target_thetas : (k, P) tensors
        The population θ_i and its target parameters θ'_i.
    cem_state : cem.CEMState
        μ and diag Σ.
    injected : int
        Slot holding the injected RL individual (−1 before the first injection).
    """

    def __init__(self, config: SystemConfig, agent: AgentConfig | None = None, seed: int = 0):
        self.config = config
        self.cfg = agent = agent if agent is not None else AgentConfig()
        self.seed = int(seed)
        self.rl = make_dqn_agent(config, agent, seed)
        # the shared replay buffer D: the RL agent's own buffer, written to by the elites too
        self.buffer = self.rl.replay
        # networks that carry a population member's parameters (for acting / deployment)
        self._elite_nets = [copy.deepcopy(self.rl.q_net) for _ in range(agent.interacting_elites)]
        cem_seed = int(np.random.SeedSequence([self.seed, 1]).generate_state(1)[0])
        self.gen = torch.Generator().manual_seed(cem_seed)  # CEM sampling
        self.np_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2]))
        theta0 = flatten_params(self.rl.q_net).detach()
        # NOTE: μ_0 is the RL agent's initial network, so the injected RL individual and the
        # sampled ones start in the same region of parameter space.
        self.cem_state = cem.init(theta0, agent.cem_init_var)
        k = agent.population_size
        self.thetas = cem.ask(self.cem_state, k, self.gen)  # (k, P)
        self.target_thetas = self.thetas.clone()  # (k, P)
        self.fitness = torch.full((k,), float("nan"))
        self.injected = -1
        self.generations = 0
        self.rl_stream = EnvStream(config, seed, ENV_STREAMS["rl"])
        self.elite_streams = [EnvStream(config, seed, ENV_STREAMS["elite"] + r)
                              for r in range(agent.interacting_elites)]
        self.updates = 0

    # ------------------------------------------------------------------ epochs
    def begin_epoch(self, epoch: int) -> None:
        """Reset every environment stream at the epoch's first seed (see :func:`episode_seed`)."""
        self.rl_stream.begin_epoch(epoch)
        for s in self.elite_streams:
            s.begin_epoch(epoch)

    # ------------------------------------------------------------------ the algorithm
    def generation(self, rl_steps: int | None = None) -> dict:
        """Run Algorithm 1 once (steps 1–7 of the module docstring); returns the generation's log."""
        a = self.cfg
        k = a.population_size
        t0 = time.perf_counter()
        rl_steps = a.rl_steps_per_generation if rl_steps is None else int(rl_steps)
        log = {"generation": self.generations, "warmup": len(self.buffer) < a.learning_starts}
        interactions = [0] * k
        nan = float("nan")
        log.update(fitness_mean=nan, fitness_max=nan, fitness_min=nan, fitness_std=nan,
                   rl_fitness=nan, rl_is_elite=False, rl_rank=-1, injected_slot=-1,
                   elite_env_steps=0, fitness_s=0.0, elite_s=0.0, cem_eps=nan, target_update=False)
        if not log["warmup"]:
            # (1) sample the population, except the injected RL individual
            fresh = cem.ask(self.cem_state, k, self.gen)
            keep = torch.zeros(k, dtype=torch.bool)
            if self.injected >= 0:
                keep[self.injected] = True
            self.thetas = torch.where(keep[:, None], self.thetas, fresh)
            # (2) fitness of every individual on the same J transitions from D (Eq 14)
            tf = time.perf_counter()
            batch = self.buffer.sample(a.fitness_batch, rng=self.np_rng)
            with torch.no_grad():
                # NOTE: the template is the RL agent's q_net: the population evolves parameters,
                # and every individual normalises with the RL network's batch-norm statistics.
                fit = td_fitness(self.rl.q_net, self.thetas, self.target_thetas, batch,
                                 a.gamma, a.reward_scale).detach().to(torch.float64).cpu()
            # NOTE: a diverged individual (inf/NaN TD error) ranks last instead of poisoning Eq 15
            fit = torch.nan_to_num(fit, nan=-math.inf)
            self.fitness = fit
            log["fitness_s"] = time.perf_counter() - tf
            log.update(_stats(fit[torch.isfinite(fit)] if torch.isfinite(fit).any() else fit))
            order = torch.argsort(-fit, stable=True)  # best first
            rank = torch.empty(k, dtype=torch.long)
            rank[order] = torch.arange(1, k + 1)
            if self.injected >= 0:
                log["rl_fitness"] = float(fit[self.injected])
                log["rl_rank"] = int(rank[self.injected])
                log["rl_is_elite"] = bool(rank[self.injected] <= a.num_elites)
            # (3) elites = top half; update μ and Σ by Eq 15
            eps = cem.damping(self.cem_state.generation, a.cem_eps_start, a.cem_eps_end, a.cem_eps_decay)
            lam = cem.elite_weights(a.num_elites, a.cem_weights)
            finite = torch.where(torch.isfinite(fit), fit, torch.finfo(torch.float64).min)
            self.cem_state = cem.tell(self.cem_state, self.thetas, finite, lam, eps)
            log["cem_eps"] = eps
            # (4) elite interaction: only the fittest `interacting_elites` act, greedily, into D
            te = time.perf_counter()
            for r in range(a.interacting_elites):
                slot = int(order[r])
                net = self._elite_nets[r]
                net.load_state_dict(self.rl.q_net.state_dict())  # current BN statistics
                unflatten_into(net, self.thetas[slot])
                act = greedy_policy(net)
                stream = self.elite_streams[r]
                for _ in range(a.elite_steps_per_generation):
                    stream.step(act(stream.env, stream.obs), self.buffer.add)
                    interactions[slot] += 1
            log["elite_s"] = time.perf_counter() - te
            log["elite_env_steps"] = sum(interactions)
        # (5) the RL agent interacts (ε-greedy) and learns (Eqs 17-19)
        tr = time.perf_counter()
        rl_log = rl_interact_and_learn(self.rl, self.rl_stream, rl_steps,
                                       0 if log["warmup"] else a.rl_updates_per_generation)
        self.updates += rl_log["updates"]
        log["rl_s"] = time.perf_counter() - tr
        log.update(rl_env_steps=rl_log["steps"], loss=rl_log["loss"], updates=rl_log["updates"],
                   epsilon=rl_log.get("epsilon", nan), rl_reward=rl_log["reward"])
        if not log["warmup"]:
            # (6) RL injection: θ_RL and θ'_RL replace the worst individual of this generation
            worst = int(order[-1])
            self.thetas[worst] = flatten_params(self.rl.q_net).detach()
            self.target_thetas[worst] = flatten_params(self.rl.target_net).detach()
            self.injected = worst
            log["injected_slot"] = worst
            # (7) population target networks: θ'_i ← θ_i every H generations
            if (self.cem_state.generation % a.target_every_generations) == 0:
                # NOTE: the slot just injected keeps the RL agent's own target θ'_RL
                others = torch.ones(k, dtype=torch.bool)
                others[worst] = False
                self.target_thetas[others] = self.thetas[others]
                log["target_update"] = True
        log["interactions"] = interactions
        log["sigma_mean"] = float(self.cem_state.var.sqrt().mean())
        log["generation_s"] = time.perf_counter() - t0
        self.generations += 1
        return log

    # ------------------------------------------------------------------ policies
    def best_individual(self) -> int:
        """Slot of the fittest individual of the last evaluated generation (−1 if none yet)."""
        if not torch.isfinite(self.fitness).any():
            return -1
        return int(torch.argmax(torch.nan_to_num(self.fitness, nan=-math.inf)))

    def elite_policy(self):
        """Greedy policy of the fittest individual (the RL agent's if no fitness yet)."""
        slot = self.best_individual()
        if slot < 0:
            return self.rl.policy()
        net = copy.deepcopy(self.rl.q_net)
        unflatten_into(net, self.thetas[slot])
        return greedy_policy(net)

    def policy(self, select_seed: int | None = None):
        """The deployed greedy policy and its source (``"rl"`` or ``"elite"``).

        ``deploy="best"`` needs ``select_seed``: both candidates run ``select_episodes``
        validation episodes from that seed and the lower mean system cost wins (ties: RL).
        """
        from dcicore.baselines import evaluate

        mode = self.cfg.deploy
        if mode == "rl" or self.best_individual() < 0:
            return self.rl.policy(), "rl"
        if mode == "elite":
            return self.elite_policy(), "elite"
        if select_seed is None:
            raise ValueError("deploy='best' needs select_seed (validation episodes)")
        rl_pol, el_pol = self.rl.policy(), self.elite_policy()
        n = self.cfg.select_episodes
        c_rl = evaluate(rl_pol, self.config, n, select_seed)["system_cost"]
        c_el = evaluate(el_pol, self.config, n, select_seed)["system_cost"]
        return (el_pol, "elite") if c_el < c_rl else (rl_pol, "rl")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue the run exactly (tensors, lists and Python scalars)."""
        return {
            "rl": self.rl.state_dict(),
            "cem": self.cem_state.state_dict(),
            "thetas": self.thetas.clone(),
            "target_thetas": self.target_thetas.clone(),
            "fitness": self.fitness.clone(),
            "injected": self.injected,
            "generations": self.generations,
            "updates": self.updates,
            "gen_state": self.gen.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
        }

    def load_state_dict(self, d: dict) -> None:
        self.rl.load_state_dict(d["rl"])
        self.buffer = self.rl.replay
        self.cem_state = cem.CEMState.from_state_dict(d["cem"])
        self.thetas = d["thetas"].clone()
        self.target_thetas = d["target_thetas"].clone()
        self.fitness = d["fitness"].clone()
        self.injected = int(d["injected"])
        self.generations = int(d["generations"])
        self.updates = int(d["updates"])
        self.gen.set_state(d["gen_state"])
        self.np_rng.bit_generator.state = d["np_rng"]


def rl_interact_and_learn(agent: DQNAgent, stream: EnvStream, steps: int, updates: int) -> dict:
    """Alg 1 lines 9–14: ``steps`` ε-greedy slots into the agent's buffer, then ``updates``
    gradient steps. Shared by CERL and the plain DDQN/D²QN learners so that all three follow the
    same RL schedule. Returns steps, updates, mean loss, summed reward (unscaled) and ε."""
    reward = 0.0
    for _ in range(steps):
        if stream.fresh:
            agent.on_episode_start()
        action = agent.act(stream.env, stream.obs, explore=True)
        r, _ = stream.step(action, agent.observe)
        reward += r
    losses, last = [], {}
    for _ in range(updates):
        last = agent.update() or {}
        if "loss" in last:
            losses.append(float(last["loss"]))
    out = {"steps": steps, "updates": len(losses), "reward": reward,
           "loss": float(np.mean(losses)) if losses else float("nan")}
    eps = getattr(agent, "epsilon", None)
    if eps is not None:
        out["epsilon"] = float(eps() if callable(eps) else eps)
    return out
