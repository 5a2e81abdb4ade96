"""Agent hyper-parameters and training budgets: ``AgentConfig``, ``BudgetConfig``, ``budget()``.

Explained in the book's chapters "CERL: evolution meets Q-learning" and "Training and results";
every value the paper leaves open is listed, with its reason, on the book's modelling-choices page.

One switch scales every run in the book: the environment variable ``DCI_BUDGET``

* ``quick``   — under a minute per run at N = 5: tests and CI (k = 10, J = 32, GCN widths
  32/64/64, 20 epochs; enough for CERL to beat Random at N = 5, a test checks it);
* ``default`` — minutes per run (about 4 min for CERL at N = 10 on one core): what the book
  build executes (k = 20, the paper's networks, 40 epochs);
* ``full``    — the paper's scale: k = 50, J = 64, ~200 epochs (hours at N = 50).

Notebooks call :func:`budget_from_env` and never hard-code epochs.

What an **epoch** is (the x-axis of Fig 4, which the paper does not define): one epoch is
``episodes_per_epoch`` episodes (``episode_slots`` environment steps each) of the *learning*
agent (the RL agent of CERL, or the DDQN/D²QN agent), with the gradient updates that go with
them, followed by a greedy evaluation. CERL's elites interact *in addition* (the paper's axis
counts epochs, not environment steps); every history row also records the total environment
steps so that curves can be redrawn per step.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

from dcicore.config import check_range

__all__ = ["AgentConfig", "BudgetConfig", "budget", "budget_from_env", "with_agent", "BUDGETS",
           "DEPLOY_CHOICES"]

#: how CERL picks the policy it deploys (see :class:`AgentConfig.deploy`)
DEPLOY_CHOICES = ("rl", "elite", "best")


@dataclass(frozen=True)
class AgentConfig:
    """Hyper-parameters of the learning agents (DDQN, D²QN, CERL). Units in each line.

    Fields marked *paper* come from Sec 5.1; the rest are *open* (reasons on the
    modelling-choices page).
    """

    # --- value learning (shared by DDQN, D²QN and CERL's RL agent) -------------------------------
    gamma: float = 0.95
    """γ, discount per slot (Eqs 14 and 17). *open*: 0.95 looks ~20 slots (10 s) ahead, beyond T = 3 s."""
    lr: float = 1e-3
    """α, Adam learning rate of Eq 19. *open*"""
    batch_size: int = 64
    """Minibatch of transitions per gradient step (Eq 18). *open* (= J)"""
    buffer_size: int = 20_000
    """Capacity of the replay buffer D, in transitions. *open*"""
    reward_scale: float = 0.1
    """Rewards (Eq 13, cost units) are multiplied by this before learning (Q in scaled units). *open*"""
    eps_start: float = 1.0
    """ε-greedy exploration of the RL agent at its first step (Alg 1 line 10). *open*"""
    eps_end: float = 0.05
    """ε after the decay. *open*"""
    eps_decay_steps: int = 2_000
    """RL-agent environment steps over which ε falls linearly from eps_start to eps_end. *open*"""
    share_explore_power: float = 2.0
    """An exploring task draws its share index as floor(levels·u^power), u ~ U[0, 1): power 1 is
    uniform, 2 (median index 25) biases exploration toward the cheap low relative shares.
    *open* (a named exploration aid, see :mod:`dcicore.dqn`)"""
    block_explore_power: float = 3.0
    """An exploring task draws its block end as the last valid layer minus floor(count·u^power)
    (count = valid block ends): power 1 is uniform, 3 favours long blocks. *open* (a named
    exploration aid): a stage holds its node for whole slots, so a random split into many short
    blocks misses T = 3 s (6 slots for 8 layers), and uniform exploration mostly shows failures."""
    target_update_every: int = 100
    """Gradient steps between hard updates θ' ← θ of the RL agent's target network (Sec 4.3). *open*"""
    d2qn_param_noise: bool = True
    """D²QN's exploration. True (default, the paper's D²QN: dueling + double DQN + adaptive
    parameter-space noise, Plappert et al. 2018). False = the same biased ε-greedy as DDQN, a
    variant that learned better at N = 5 on the quick budget (222 vs 250 system cost); offered
    for comparison, not used for the paper's baseline. *open*"""
    noise_target_eps: float = 0.05
    """D²QN only: ε-equivalent KL target of adaptive parameter noise (Plappert et al.). *open*"""
    learning_starts: int = 200
    """Transitions in D before gradient steps, fitness and elite interaction start. *open*"""
    hidden: tuple = (64, 128, 256)
    """Hidden sizes of the three GCN layers. *paper*"""
    share_action: str = "relative"
    """How the agent's share index is read (:attr:`dcicore.config.SystemConfig.share_action`).
    *Named deviation, an agent aid*: the paper's absolute shares (index k = k+1 % of capacity)
    leave a cheap-and-feasible band 1–2 levels wide that depends on the chosen node, which a
    factorised share branch cannot see; ``"relative"`` (index 0 = just fast enough for the
    deadline, 99 = twice that) lets the branch learn one curve for every node. The physical
    system is the same: :func:`dcicore.train.train` runs the agent and its evaluations with
    ``dataclasses.replace(config, share_action=...)``, the heuristics keep absolute shares.
    ``"absolute"`` trains on the paper's encoding."""

    # --- CEM (Sec 4.1) ---------------------------------------------------------------------------
    population_size: int = 50
    """k, individuals per generation (the injected RL individual included). *paper*"""
    fitness_batch: int = 64
    """J, transitions sampled from D per generation to compute the fitness of Eq 14. *paper*"""
    target_every_generations: int = 1
    """H, generations between hard updates θ'_i ← θ_i of the population's target networks. *paper*"""
    elite_fraction: float = 0.5
    """Share of the population whose samples update μ and Σ (Eq 15: the top half). *paper*"""
    interacting_elites: int = 1
    """The paper's "top N individuals" that act in the environment each generation (Sec 4.2).
    *open*: 1, the single best individual (VEB-RL's elite interaction with a small population);
    the letter N is the device count elsewhere, and more interacting elites multiply env steps."""
    cem_init_var: float = 1e-3
    """Initial variance of every parameter in Σ_0 (CEM-RL/VEB-RL: 1e-3). *open*"""
    cem_eps_start: float = 1e-3
    """ε of Eq 15 at generation 0 (the εI that keeps Σ from collapsing). *open* (VEB-RL 1e-3)"""
    cem_eps_end: float = 1e-5
    """Limit ε decays to. *open* (VEB-RL 1e-5)"""
    cem_eps_decay: float = 0.95
    """ε_g = eps_end + (eps_start − eps_end)·decay^g. *open* (VEB-RL 0.95)"""
    cem_weights: str = "log"
    """λ_i of Eq 15: ``"log"`` (λ_i ∝ log((μ+1)/i), best elite weighs most) or ``"equal"``. *open*"""
    rl_steps_per_generation: int = 10
    """Environment steps (slots) the RL agent takes per generation (Alg 1 lines 9–13). *open*"""
    rl_updates_per_generation: int = 5
    """Gradient steps (Eq 19) of the RL agent per generation. *open*: 5 (one per two RL steps)
    by default, so that a generation at N = 50 with k = 50 stays near 5 s (an update there costs
    ~0.3 s: a state holds ~100 tasks); the quick and default budgets (small N) use 20 (two per
    RL step), which learning at N = 5 needed."""
    elite_steps_per_generation: int = 10
    """Environment steps each interacting elite takes per generation (Alg 1 line 7). *open*"""
    deploy: str = "best"
    """Policy CERL hands back: ``"rl"`` the RL agent's greedy policy; ``"elite"`` the fittest
    individual; ``"best"`` whichever of the two has the lower system cost on validation episodes
    (seeds disjoint from the evaluation seeds), as VEB-RL reports the better of RL and EA. *open*"""
    select_episodes: int = 2
    """Validation episodes used by ``deploy="best"`` at each evaluation. *open*"""

    def __post_init__(self) -> None:
        check_range("gamma", self.gamma, 0, 1, hi_open=True)
        check_range("lr", self.lr, 0, None, lo_open=True)
        check_range("batch_size", self.batch_size, 1, None, integer=True)
        check_range("buffer_size", self.buffer_size, 1, None, integer=True)
        check_range("reward_scale", self.reward_scale, 0, None, lo_open=True)
        check_range("eps_start", self.eps_start, 0, 1)
        check_range("eps_end", self.eps_end, 0, 1)
        check_range("eps_decay_steps", self.eps_decay_steps, 1, None, integer=True)
        check_range("share_explore_power", self.share_explore_power, 0, None, lo_open=True)
        check_range("block_explore_power", self.block_explore_power, 0, None, lo_open=True)
        check_range("target_update_every", self.target_update_every, 1, None, integer=True)
        if not isinstance(self.d2qn_param_noise, bool):
            raise ValueError(f"d2qn_param_noise must be True or False, got {self.d2qn_param_noise!r}")
        check_range("noise_target_eps", self.noise_target_eps, 0, 1, lo_open=True, hi_open=True)
        check_range("learning_starts", self.learning_starts, 1, None, integer=True)
        if self.share_action not in ("absolute", "relative"):
            raise ValueError(f"share_action must be one of 'absolute', 'relative', got {self.share_action!r}")
        if (not isinstance(self.hidden, tuple) or len(self.hidden) != 3
                or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden)):
            raise ValueError(f"hidden must be a tuple of 3 integers in [1, inf), got {self.hidden!r}")
        check_range("population_size", self.population_size, 2, None, integer=True)
        check_range("fitness_batch", self.fitness_batch, 1, None, integer=True)
        check_range("target_every_generations", self.target_every_generations, 1, None, integer=True)
        check_range("elite_fraction", self.elite_fraction, 0, 1, lo_open=True)
        check_range("interacting_elites", self.interacting_elites, 0, self.num_elites, integer=True)
        check_range("cem_init_var", self.cem_init_var, 0, None, lo_open=True)
        check_range("cem_eps_start", self.cem_eps_start, 0, None)
        check_range("cem_eps_end", self.cem_eps_end, 0, None)
        check_range("cem_eps_decay", self.cem_eps_decay, 0, 1)
        if self.cem_weights not in ("log", "equal"):
            raise ValueError(f"cem_weights must be one of 'log', 'equal', got {self.cem_weights!r}")
        check_range("rl_steps_per_generation", self.rl_steps_per_generation, 1, None, integer=True)
        check_range("rl_updates_per_generation", self.rl_updates_per_generation, 0, None, integer=True)
        check_range("elite_steps_per_generation", self.elite_steps_per_generation, 0, None, integer=True)
        if self.deploy not in DEPLOY_CHOICES:
            allowed = ", ".join(map(repr, DEPLOY_CHOICES))
            raise ValueError(f"deploy must be one of {allowed}, got {self.deploy!r}")
        check_range("select_episodes", self.select_episodes, 1, None, integer=True)

    @property
    def num_elites(self) -> int:
        """μ = max(1, floor(elite_fraction · k)), the elites that update μ and Σ (Eq 15)."""
        return max(1, int(self.elite_fraction * self.population_size))


@dataclass(frozen=True)
class BudgetConfig:
    """How long a training run lasts and how it is measured and saved."""

    name: str = "custom"
    """Label stored with the results."""
    epochs: int = 200
    """Epochs of training (Fig 4's x-axis; see the module docstring for what an epoch is)."""
    episodes_per_epoch: int = 1
    """Episodes (of ``episode_slots`` steps) of the learning agent per epoch."""
    eval_episodes: int = 3
    """Greedy evaluation episodes after every epoch (fixed seeds eval_seed, eval_seed+1, ...)."""
    eval_seed: int = 100_000
    """First seed of the evaluation episodes; the same for every epoch, method and run."""
    checkpoint_every: int = 10
    """Epochs between checkpoints (when a checkpoint directory is given)."""
    torch_threads: int = 1
    """Intra-op threads torch uses during training (0 = leave torch's setting). The networks are
    small: one thread avoids the spin-waiting that makes many small ops 10-50× slower on a
    shared or busy CPU; a large machine at N = 50 may gain from more."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """The agent hyper-parameters used at this scale."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        check_range("epochs", self.epochs, 1, None, integer=True)
        check_range("episodes_per_epoch", self.episodes_per_epoch, 1, None, integer=True)
        check_range("eval_episodes", self.eval_episodes, 1, None, integer=True)
        check_range("eval_seed", self.eval_seed, 0, 2**31 - 1, integer=True)
        check_range("checkpoint_every", self.checkpoint_every, 1, None, integer=True)
        check_range("torch_threads", self.torch_threads, 0, 1024, integer=True)
        if not isinstance(self.agent, AgentConfig):
            raise ValueError(f"agent must be an AgentConfig, got {type(self.agent).__name__}")

    def to_dict(self) -> dict:
        """``dataclasses.asdict``: store it beside every result."""
        return asdict(self)


def _quick() -> BudgetConfig:
    # smaller networks and population than the paper's so that a run takes seconds on a CI core
    agent = AgentConfig(population_size=10, fitness_batch=32, batch_size=32, hidden=(32, 64, 64),
                        eps_decay_steps=400, learning_starts=50, target_update_every=50,
                        rl_updates_per_generation=20, buffer_size=5_000, select_episodes=1)
    return BudgetConfig(name="quick", epochs=20, episodes_per_epoch=1, eval_episodes=2,
                        checkpoint_every=5, agent=agent)


def _default() -> BudgetConfig:
    agent = AgentConfig(population_size=20, eps_decay_steps=1_000, rl_updates_per_generation=20)
    return BudgetConfig(name="default", epochs=40, episodes_per_epoch=1, eval_episodes=3,
                        checkpoint_every=5, agent=agent)


def _full() -> BudgetConfig:
    # 200 epochs x (40 RL + 40 elite) slots = 16 000 transitions: the default 20 000 keeps them all
    agent = AgentConfig(population_size=50, eps_decay_steps=4_000)
    return BudgetConfig(name="full", epochs=200, episodes_per_epoch=1, eval_episodes=5,
                        checkpoint_every=10, agent=agent)


#: the named budgets (factories, so every call returns a fresh, equal object)
BUDGETS = {"quick": _quick, "default": _default, "full": _full}


def budget(name: str) -> BudgetConfig:
    """The named budget: ``"quick"`` (seconds), ``"default"`` (minutes) or ``"full"`` (paper scale)."""
    if name not in BUDGETS:
        raise ValueError(f"budget name must be one of {', '.join(map(repr, BUDGETS))}, got {name!r}")
    return BUDGETS[name]()


def budget_from_env(default: str = "quick") -> BudgetConfig:
    """The budget named by the environment variable ``DCI_BUDGET`` (``default`` when unset)."""
    name = os.environ.get("DCI_BUDGET", "").strip() or default
    if name not in BUDGETS:
        raise ValueError(
            f"DCI_BUDGET must be one of {', '.join(map(repr, BUDGETS))}, got {name!r}"
        )
    return budget(name)


def with_agent(b: BudgetConfig, **changes) -> BudgetConfig:
    """A copy of budget ``b`` whose agent config has ``changes`` (``dataclasses.replace``)."""
    return replace(b, agent=replace(b.agent, **changes))
