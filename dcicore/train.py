"""``train(method, config, budget, seed)``: CERL, DDQN or D²QN, with evaluation, progress and
exact checkpoint/resume.

Explained in the book's chapter "Training and results".

**Epoch** (Fig 4's x-axis, which the paper leaves undefined): ``budget.episodes_per_epoch``
episodes (``config.episode_slots`` slots each) of the learning agent — CERL's RL agent, or the
DDQN/D²QN agent — split into generations of ``rl_steps_per_generation`` slots, each followed
by ``rl_updates_per_generation`` gradient steps. DDQN and D²QN follow exactly this RL schedule
without the population, so the three methods differ only by the evolutionary part. CERL's
elites interact on top (``elite_env_steps`` in the history; ``env_steps`` counts everything).
After every epoch the deployed greedy policy is evaluated on ``budget.eval_episodes`` episodes
with the same fixed seeds (``budget.eval_seed + 0, 1, ...``) for every epoch, method and run.

**Randomness** comes only from generators made from ``seed`` and stored in the checkpoint
(the agents' own generators, CERL's torch/numpy generators, the torch global generator) and
from episode seeds that are pure functions of (seed, epoch, stream, episode). A run killed
after a checkpoint and resumed ends with the same history (wall-clock columns aside) and the
same parameters as an uninterrupted run.

Checkpoints are ``torch.save`` dicts of tensors, lists and Python scalars, loadable with
``torch.load(weights_only=True)``, written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from dcicore.baselines import evaluate
from dcicore.budgets import BudgetConfig, budget as named_budget
from dcicore.cerl import CERL, ENV_STREAMS, EnvStream, make_dqn_agent, rl_interact_and_learn
from dcicore.config import SystemConfig, check_range

__all__ = ["train", "TrainResult", "TrainedPolicy", "METHODS", "DQNLearner", "CHECKPOINT_NAME", "WALL_KEYS"]

#: the methods ``train`` knows (Sec 5.2.1): CERL and the two RL baselines
METHODS = ("CERL", "DDQN", "D2QN")
#: file name of the checkpoint inside ``checkpoint_dir``
CHECKPOINT_NAME = "checkpoint.pt"
#: history columns measured with the wall clock (the only ones that differ between reruns)
WALL_KEYS = ("wall_s", "train_s", "eval_s", "generation_s", "fitness_s", "elite_s", "rl_s")
#: offset of the validation seeds (deploy="best") from the evaluation seeds
SELECT_SEED_OFFSET = 500_000


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    history : list of dict
        One row per epoch: ``epoch`` (1-based), ``system_cost``, ``completion_rate``,
        ``collaborations``, ``energy_j``, ``delay_s``, ``system_cost_std`` (evaluation of the
        deployed greedy policy), ``env_steps`` / ``rl_env_steps`` / ``elite_env_steps``
        (cumulative), ``wall_s``, and the method's own logs averaged over the epoch.
    policy : TrainedPolicy
        The deployed greedy policy ``f(env) -> action``; ``policy.config`` is the config it was
        trained on (with the agent's ``share_action``). Evaluate it with
        ``evaluate(result.policy, result.config, episodes, seed)``.
    agent : CERL or DQNLearner
        The trained learner (``agent.rl`` / ``agent.agent`` hold the networks).
    logs : list of dict
        Per-generation logs of the whole run (CERL: fitness, injection, steps...).
    """

    history: list
    policy: object
    agent: object
    logs: list = field(default_factory=list)
    method: str = ""
    seed: int = 0
    config: SystemConfig | None = None
    """The config the agent was trained and evaluated on: the caller's config with
    ``share_action`` set to the agent's (``budget.agent.share_action``)."""
    budget: dict = field(default_factory=dict)


class TrainedPolicy:
    """A trained greedy policy ``f(env) -> action`` bound to the config it was trained on.

    The meaning of the share column depends on ``config.share_action``, so calling it on an
    environment whose config reads shares differently raises ``ValueError`` (evaluate it with
    ``evaluate(policy, policy.config, ...)``; the physical system is the same either way).
    """

    def __init__(self, fn, config: SystemConfig, source: str = "rl"):
        self.fn, self.config, self.source = fn, config, source

    def __call__(self, env):
        env_cfg = getattr(getattr(env, "unwrapped", env), "config", None)
        if env_cfg is not None and env_cfg.share_action != self.config.share_action:
            raise ValueError(
                f"this policy was trained with share_action={self.config.share_action!r} but the "
                f"environment reads shares as {env_cfg.share_action!r}; evaluate it with its own "
                "config: evaluate(result.policy, result.config, ...)")
        return self.fn(env)


class DQNLearner:
    """DDQN or D²QN trained on CERL's RL schedule (no population): one ``generation()`` is
    ``rl_steps_per_generation`` ε-greedy slots then ``rl_updates_per_generation`` gradient steps.
    D²QN is the dueling variant; it uses parameter noise instead of ε only with
    ``AgentConfig.d2qn_param_noise``."""

    def __init__(self, config: SystemConfig, agent_cfg, seed: int, *, d2qn: bool):
        self.config, self.cfg, self.seed = config, agent_cfg, int(seed)
        self.rl = make_dqn_agent(config, agent_cfg, seed, dueling=d2qn,
                                 param_noise=d2qn and agent_cfg.d2qn_param_noise)
        self.buffer = self.rl.replay
        self.stream = EnvStream(config, seed, ENV_STREAMS["rl"])
        self.generations = 0
        self.updates = 0

    def begin_epoch(self, epoch: int) -> None:
        self.stream.begin_epoch(epoch)

    def generation(self, rl_steps: int | None = None) -> dict:
        a = self.cfg
        t0 = time.perf_counter()
        steps = a.rl_steps_per_generation if rl_steps is None else int(rl_steps)
        warm = len(self.buffer) < a.learning_starts
        out = rl_interact_and_learn(self.rl, self.stream, steps, 0 if warm else a.rl_updates_per_generation)
        self.updates += out["updates"]
        self.generations += 1
        return {"generation": self.generations - 1, "warmup": warm, "rl_env_steps": out["steps"],
                "elite_env_steps": 0, "loss": out["loss"], "updates": out["updates"],
                "epsilon": out.get("epsilon", float("nan")), "rl_reward": out["reward"],
                "generation_s": time.perf_counter() - t0}

    def policy(self, select_seed=None):
        return self.rl.policy(), "rl"

    def state_dict(self) -> dict:
        return {"rl": self.rl.state_dict(), "generations": self.generations, "updates": self.updates}

    def load_state_dict(self, d: dict) -> None:
        self.rl.load_state_dict(d["rl"])
        self.buffer = self.rl.replay
        self.generations = int(d["generations"])
        self.updates = int(d["updates"])


def _make_learner(method: str, config: SystemConfig, agent_cfg, seed: int):
    if method == "CERL":
        return CERL(config, agent_cfg, seed)
    return DQNLearner(config, agent_cfg, seed, d2qn=(method == "D2QN"))


def _epoch_summary(logs: list) -> dict:
    """Average the generation logs of one epoch into history columns."""
    out = {}
    if not logs:
        return out
    keys = []
    for g in logs:
        keys += [k for k, v in g.items() if isinstance(v, (int, float, bool)) and k not in keys
                 and k not in ("generation", "epoch", "injected_slot")]
    for key in keys:
        vals = np.array([float(g[key]) for g in logs if key in g], dtype=float)
        if key in ("rl_env_steps", "elite_env_steps", "updates"):
            out[key + "_epoch"] = float(vals.sum())
        elif key == "warmup":
            out["warmup_generations"] = int(vals.sum())
        elif key == "rl_rank":
            ranks = vals[vals > 0]
            out["rl_rank"] = float(ranks.mean()) if ranks.size else float("nan")
        elif key in ("rl_is_elite", "target_update"):
            live = [float(g[key]) for g in logs if not g.get("warmup", False)]
            out[key + "_rate"] = float(np.mean(live)) if live else float("nan")
        else:
            finite = vals[np.isfinite(vals)]
            out[key] = float(finite.mean()) if finite.size else float("nan")
    out["generations"] = len(logs)
    return out


# ---------------------------------------------------------------------- checkpoint helpers
def _rng_states() -> dict:
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "numpy_global": {"bit_generator": np_state["bit_generator"],
                         "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
                         "pos": int(np_state["state"]["pos"]),
                         "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
    }


def _set_rng_states(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    g = d["numpy_global"]
    np.random.set_state({"bit_generator": g["bit_generator"],
                         "state": {"key": g["key"].numpy().astype(np.uint32), "pos": g["pos"]},
                         "has_gauss": g["has_gauss"], "gauss": g["gauss"]})


def _save_atomic(obj: dict, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _identity(method, config, bud: BudgetConfig, seed) -> dict:
    b = dataclasses.asdict(bud)
    for k in ("epochs", "checkpoint_every", "name", "torch_threads"):
        b.pop(k)
    return {"method": method, "seed": int(seed), "config": config.to_dict(), "budget": _plain(b)}


def _plain(x):
    """Make a config dict safe for weights_only loading (tuples -> lists)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@contextlib.contextmanager
def _deterministic(threads: int = 0):
    """Deterministic torch kernels (and ``threads`` intra-op threads if > 0) inside the block;
    the previous settings and the caller's global torch/numpy random states come back afterwards."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    prev_np = np.random.get_state()
    torch.use_deterministic_algorithms(True)
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        if threads > 0:
            torch.set_num_threads(prev_threads)
        np.random.set_state(prev_np)


# ---------------------------------------------------------------------- train
def train(method: str, config: SystemConfig | None = None, budget="quick", seed: int = 0, *,
          checkpoint_dir: str | None = None, resume: bool = True, progress: bool = True,
          callback=None) -> TrainResult:
    """Train ``method`` ("CERL", "DDQN" or "D2QN") on ``config`` for ``budget`` epochs.

    Parameters
    ----------
    budget : BudgetConfig or str
        A budget or a name of :func:`dcicore.budgets.budget` ("quick", "default", "full").
    seed : int
        The one seed of the run (networks, exploration, CEM, episodes).
    checkpoint_dir : str, optional
        Folder for ``checkpoint.pt``, written every ``budget.checkpoint_every`` epochs and at the
        end. With ``resume=True`` an existing checkpoint of the same method, seed, config and
        budget (``epochs`` may grow) is continued; a mismatch raises ``ValueError``.
    progress : bool
        Show a tqdm bar (a widget in notebooks).
    callback : callable, optional
        ``callback(row)`` after every epoch (e.g. a live plot); an exception stops the run.

    Returns
    -------
    TrainResult

    Notes
    -----
    The agent acts, learns and is evaluated on ``dataclasses.replace(config,
    share_action=budget.agent.share_action)`` (default ``"relative"``, a named aid: see
    :class:`dcicore.budgets.AgentConfig`); the physical system is unchanged. ``result.config``
    is that config and ``result.policy`` refuses an environment that reads shares differently.
    Compare with the heuristics on the same episodes::

        res = train("CERL", cfg, "quick", seed=0)
        evaluate(res.policy, res.config, 5, 2024)   # the trained policy
        evaluate("Random", res.config, 5, 2024)     # heuristics always use absolute shares
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    config = config if config is not None else SystemConfig()
    if not isinstance(config, SystemConfig):
        raise ValueError(f"config must be a SystemConfig, got {type(config).__name__}")
    bud = named_budget(budget) if isinstance(budget, str) else budget
    if not isinstance(bud, BudgetConfig):
        raise ValueError(f"budget must be a BudgetConfig or a budget name, got {budget!r}")
    check_range("seed", seed, 0, 2**31 - 1, integer=True)
    a = bud.agent
    # NOTE: the agent reads its share index in its own encoding (a named aid, see AgentConfig)
    config = dataclasses.replace(config, share_action=a.share_action)

    ident = _identity(method, config, bud, seed)
    path = os.path.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir else None

    with _deterministic(bud.torch_threads):
        torch.manual_seed(int(np.random.SeedSequence([seed, 3]).generate_state(1)[0]))
        learner = _make_learner(method, config, a, seed)
        history, logs, start = [], [], 0
        totals = {"env_steps": 0, "rl_env_steps": 0, "elite_env_steps": 0}
        if path and resume and os.path.exists(path):
            ck = torch.load(path, weights_only=True)
            if ck["identity"] != ident:
                diff = [k for k in ident if ck["identity"].get(k) != ident[k]]
                raise ValueError(f"checkpoint {path} belongs to another run (differs in {diff}); "
                                 "use resume=False or another checkpoint_dir")
            learner.load_state_dict(ck["learner"])
            history, logs = list(ck["history"]), list(ck["logs"])
            totals = dict(ck["totals"])
            start = int(ck["epoch"])
            _set_rng_states(ck["rng"])
        steps_per_epoch = bud.episodes_per_epoch * config.episode_slots
        policy = None
        bar = tqdm(total=bud.epochs, initial=min(start, bud.epochs), disable=not progress,
                   desc=f"{method} N={config.num_devices}", unit="epoch")
        try:
            for epoch in range(start, bud.epochs):
                t0 = time.perf_counter()
                learner.begin_epoch(epoch)
                epoch_logs, done = [], 0
                while done < steps_per_epoch:
                    n = min(a.rl_steps_per_generation, steps_per_epoch - done)
                    g = learner.generation(n)
                    g["epoch"] = epoch + 1
                    epoch_logs.append(g)
                    done += n
                for g in epoch_logs:
                    totals["rl_env_steps"] += g["rl_env_steps"]
                    totals["elite_env_steps"] += g["elite_env_steps"]
                totals["env_steps"] = totals["rl_env_steps"] + totals["elite_env_steps"]
                t1 = time.perf_counter()
                pol, source = learner.policy(_select_seed(bud, epoch))
                pol = TrainedPolicy(pol, config, source)
                policy = pol
                ev = evaluate(pol, config, bud.eval_episodes, bud.eval_seed)
                t2 = time.perf_counter()
                row = {"epoch": epoch + 1, "method": method, "num_devices": config.num_devices, "seed": seed}
                row.update({k: ev[k] for k in ("system_cost", "system_cost_std", "completion_rate",
                                               "collaborations", "energy_j", "delay_s")})
                row["deployed"] = source
                row.update(totals)
                row.update(_epoch_summary(epoch_logs))
                row.update(train_s=t1 - t0, eval_s=t2 - t1, wall_s=t2 - t0)
                history.append(row)
                logs.extend(_clean_log(g) for g in epoch_logs)
                bar.update(1)
                bar.set_postfix(cost=f"{row['system_cost']:.1f}", done=f"{row['completion_rate']:.0%}")
                last = epoch + 1 == bud.epochs
                if path and ((epoch + 1) % bud.checkpoint_every == 0 or last):
                    os.makedirs(checkpoint_dir, exist_ok=True)
                    _save_atomic({"identity": ident, "epoch": epoch + 1, "learner": learner.state_dict(),
                                  "history": history, "logs": logs, "totals": totals,
                                  "rng": _rng_states()}, path)
                if callback is not None:
                    callback(row)
        finally:
            bar.close()
        if policy is None:  # nothing left to train (resumed at the end): choose again, same seed
            policy, source = learner.policy(_select_seed(bud, bud.epochs - 1))
            policy = TrainedPolicy(policy, config, source)
    return TrainResult(history=history, policy=policy, agent=learner, logs=logs, method=method,
                       seed=seed, config=config, budget=dataclasses.asdict(bud))


def _select_seed(bud: BudgetConfig, epoch: int) -> int:
    """First validation seed (deploy="best") after ``epoch`` (0-based): disjoint from eval seeds."""
    return bud.eval_seed + SELECT_SEED_OFFSET + epoch * bud.agent.select_episodes


def _clean_log(g: dict) -> dict:
    """A generation log with only checkpoint-safe values (scalars, lists of ints)."""
    out = {}
    for k, v in g.items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [int(x) if isinstance(x, (int, np.integer)) else float(x) for x in v]
    return out
