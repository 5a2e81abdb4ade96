"""The points the paper leaves open: what we chose, where it lives, and why.

Rendered by the book's appendix "Modelling choices" (``book/modelling-choices.ipynb``), which
reads the *current* default of every named setting from code, so the page cannot drift from the
package. A test checks that every ``SystemConfig`` field marked *open* appears here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields

__all__ = ["Choice", "CHOICES", "AGENT_CHOICES", "current_value", "choices_table"]


@dataclass(frozen=True)
class Choice:
    """One open point: ``settings`` are ``"Class.field"`` names (or a module path for rules)."""

    point: str
    settings: tuple
    reason: str


CHOICES = (
    Choice(
        "Slot semantics",
        ("SystemConfig.slot_s", "SystemConfig.episode_slots"),
        "A slot is a fixed-length decision epoch. Every ready task receives one action per slot; a "
        "stage (one block on one node) holds its share for ceil(duration / slot) slots, so "
        "long stages congest a node as they would in reality. 0.5 s gives six decisions within "
        "the 3 s deadline; 40 slots (20 s) let several waves of tasks interact.",
    ),
    Choice(
        "Deadline accounting (constraint 10)",
        ("dcicore.schedule",),
        "A task's clock runs from its arrival, including slot alignment and waiting, so a stage "
        "must end by arrival + T. This is stricter than summing only compute and transmission "
        "delays, but a deadline a task can exceed by waiting would not be a deadline. A stage "
        "that cannot end in time fails the task at once (penalty P, no resources held).",
    ),
    Choice(
        "Task arrival rate",
        ("SystemConfig.arrival_rate_hz", "SystemConfig.max_tasks_per_device"),
        "0.5 tasks/s per ED loads the MEC lightly at N = 10 and beyond its capacity at N = 50 "
        "(each task needs about 0.25 GHz for 3 s), which is what makes EC's completion rate "
        "fall with N as in Fig 7. An ED holds at most 3 tasks; more are dropped and counted as "
        "failures, which keeps the observation a fixed size.",
    ),
    Choice(
        "Number of subcarriers S",
        ("SystemConfig.num_subcarriers",),
        "10 subcarriers of 2 MHz. Few enough that constraint 7 binds when many tasks move at "
        "once at N = 50, enough that single transfers take tens of milliseconds.",
    ),
    Choice(
        "Node placement and distances",
        ("SystemConfig.area_m", "SystemConfig.min_distance_m"),
        "EDs uniform in a 500 m square with the MEC at its centre; positions are redrawn at every "
        "reset. Distances are floored at 10 m so that g = d^-4 stays finite.",
    ),
    Choice(
        "Which links exist",
        ("SystemConfig.mec_range_m", "SystemConfig.d2d_range_m"),
        "An ED reaches the MEC within 250 m (the square's corners, about a fifth of the area, are "
        "out of reach: the paper's 'connection constraints' on EC) and another ED within 150 m, "
        "so an out-of-reach ED can still collaborate through neighbours.",
    ),
    Choice(
        "Units of Eq 4 and the MEC's energy",
        ("SystemConfig.mec_k0", "SystemConfig.k0"),
        "r is in Hz, so E = k0 C r^2 is the usual dynamic-power model. The MEC's energy is "
        "charged with the same k0: its compute is not free, and at full share (10 GHz) a whole "
        "task would cost ~10^2 J, so the scheduler must learn to run tasks just fast enough. "
        "Set mec_k0 = 0 to model a grid-powered server whose energy is not counted.",
    ),
    Choice(
        "Failure penalty P",
        ("SystemConfig.penalty",),
        "10 cost units, about ten times the cost of a well-run task (~1: 0.47 J and 3 s at the "
        "cheapest feasible rate), so a failure always outweighs the energy and delay it saves, "
        "as Sec 3.3 asks.",
    ),
    Choice(
        "Background load",
        ("SystemConfig.background_load_max", "SystemConfig.mec_background_load_max"),
        "Every slot each ED loses U[0, 0.5] of its capacity to its own work and the MEC "
        "U[0, 0.2] to other users, independently. This is what makes the available resources "
        "change from slot to slot (Fig 5).",
    ),
    Choice(
        "Conflicts on subcarriers (7) and capacity (8)",
        ("SystemConfig.conflict_rule", "dcicore.schedule"),
        "Repair by default, in a fixed row order: unreachable node -> stay; taken subcarrier -> "
        "lowest free one, or stay; too large a share -> what is free, or wait. Repair keeps every "
        "action of the MultiDiscrete space legal and lets the heuristics and agents share one "
        "environment; masks (env.action_masks) let agents avoid repairs. 'fail' penalises instead.",
    ),
    Choice(
        "How the learning agents read the share R (an agent aid)",
        ("SystemConfig.share_action",),
        "The environment's default is the paper's: R = 1..100 % of the node's capacity. Trained "
        "with it, our agents did not learn (they failed nearly every task): by Eq 4 a stage's "
        "energy grows with r^2, so the band of shares that are both fast enough and cheap is 1-2 "
        "levels wide and depends on the node, which a per-task share head cannot see. 'relative' "
        "keeps 100 values of R but reads them as x1..x2 of the block's just-fast-enough share on "
        "the chosen node. The agents train and are evaluated with it; the heuristics choose shares "
        "themselves and are unaffected.",
    ),
    Choice(
        "Whether the result returns to the source ED",
        ("SystemConfig.return_result",),
        "No by default: the paper charges no return transfer and the result is 9 values (576 "
        "bits), microseconds on any link.",
    ),
    Choice(
        "conv3's workload",
        ("SystemConfig.conv3_rule",),
        "The paper prints 64*16*64*17 but its own rule gives 64*16*16*64*17; we follow the rule "
        "(every other conv layer obeys it; the printed value drops a factor 16).",
    ),
    Choice(
        "The Random baseline's 'OC'",
        ("dcicore.baselines.RandomOffloading",),
        "Read as offloading the whole task to the MEC: each task picks LC or EC with probability "
        "1/2.",
    ),
    Choice(
        "Shares chosen by the heuristics",
        ("dcicore.baselines.cheapest_level", "dcicore.baselines.greedy"),
        "LC, EC and Random give a task the cheapest share that still meets its deadline: the "
        "larger of the deadline share and the share nearest r* = (w_d / (2 w_e k0))^(1/3) "
        "(~0.232 GHz), where the cost per cycle is lowest. A whole task needs ~0.248 GHz to "
        "finish in 3 s, so in practice they run just fast enough. Greedy searches every node, "
        "block end and share level with a look-ahead. Giving 100 % would handicap the baselines.",
    ),
    Choice(
        "Aggregation of system cost and completion rate",
        ("dcicore.baselines.evaluate",),
        "System cost = mean over episodes of the summed Eq 6 cost of all stages plus P per "
        "failure (the negative return). Completion rate = completed / (completed + failed) over "
        "all episodes; tasks still running when an episode ends are not counted.",
    ),
)

# --- learning agents (Part II) -----------------------------------------------------------------
AGENT_CHOICES = (
    Choice(
        "How one Q-network scores the combinatorial action",
        ("dcicore.nets.GCNQNetwork",),
        "Action branching (Tavakoli et al. 2018): one head per part of a(t) over the shared GCN "
        "torso - node scores from (task's next-layer embedding, node embedding) pairs, block-end "
        "scores on the task-layer embeddings, share and subcarrier bins per task - so a task needs "
        "(N+1)+L+100+S outputs instead of (N+1)*L*100*S. A slot's Q(s,a) combines the ready "
        "tasks' branch values; a state with no ready task gets an idle value so the TD chain does "
        "not break. Invalid choices are masked with -inf.",
    ),
    Choice(
        "What an epoch is (Fig 4's axis)",
        ("BudgetConfig.episodes_per_epoch", "BudgetConfig.epochs"),
        "One epoch = episodes_per_epoch episodes (40 slots each) of the learning agent's own "
        "interaction, cut into generations of rl_steps_per_generation steps; CERL's elite steps "
        "come on top. After each epoch the deployed greedy policy is scored on the same fixed "
        "evaluation seeds for every method, so curves compare like with like.",
    ),
    Choice(
        "The paper's 'top N individuals' that interact",
        ("AgentConfig.interacting_elites", "AgentConfig.elite_steps_per_generation"),
        "N is already the number of devices; we name it interacting_elites. Default 1: the "
        "fittest individual plays elite_steps_per_generation greedy slots per generation into D; "
        "more elites multiply environment steps without new information at k = 50.",
    ),
    Choice(
        "Covariance of the CEM population",
        ("dcicore.cem", "AgentConfig.cem_init_var"),
        "Diagonal Sigma: the Q-network has ~10^5 parameters, so a full Sigma would hold ~10^10 "
        "numbers and has rank <= k/2 anyway; CEM-RL and VEB-RL use the same. Initial variance "
        "1e-3 around the RL network's initial parameters.",
    ),
    Choice(
        "Weights lambda_i and epsilon of Eq 15",
        ("AgentConfig.cem_weights", "AgentConfig.cem_eps_start", "AgentConfig.cem_eps_end",
         "AgentConfig.cem_eps_decay"),
        "lambda_i proportional to log((mu+1)/i), normalised (the usual CEM/CMA weights, as in "
        "VEB-RL); epsilon decays geometrically from 1e-3 to 1e-5, VEB-RL's damping, so early "
        "generations keep exploring and later ones concentrate.",
    ),
    Choice(
        "Population size, fitness batch, target period",
        ("AgentConfig.population_size", "AgentConfig.fitness_batch",
         "AgentConfig.target_every_generations", "AgentConfig.elite_fraction"),
        "The paper's k = 50, J = 64, H = 1 and elites = the top half (the quick and default "
        "budgets shrink k to keep the book's notebooks short; the full budget uses the paper's).",
    ),
    Choice(
        "RL schedule and exploration",
        ("AgentConfig.rl_steps_per_generation", "AgentConfig.rl_updates_per_generation",
         "AgentConfig.learning_starts", "AgentConfig.eps_decay_steps",
         "AgentConfig.share_explore_power", "AgentConfig.block_explore_power"),
        "The RL agent takes a few steps and a few gradient updates per generation, after a "
        "warm-up that fills D. Exploration is epsilon-greedy per task; a random share index is "
        "drawn as floor(100 u^2) (low shares are the cheap ones) and a random block end favours "
        "long blocks (a stage holds whole slots, so many short blocks miss the deadline).",
    ),
    Choice(
        "How the agents read the share R",
        ("AgentConfig.share_action",),
        "'relative' (see SystemConfig.share_action above): train() runs the agent's environment "
        "and its evaluations with it; the trained policy refuses an environment that reads shares "
        "the other way.",
    ),
    Choice(
        "Joint Q-value and loss",
        ("dcicore.nets.GCNQNetwork",),
        "Q(s,a) = V(s) + sum over ready tasks of the mean of the task's four chosen branch values "
        "(a VDN-style sum): Eq 13 sums every task's cost, so each task's term carries its own part. "
        "The loss is Eq 18 on this joint value (measured at N = 5: the mean over tasks instead of "
        "the sum left DDQN at 421 vs 216).",
    ),
    Choice(
        "D2QN's exploration",
        ("AgentConfig.d2qn_param_noise", "AgentConfig.noise_target_eps"),
        "The paper's D2QN: adaptive parameter-space noise, sigma adapted x1.01 / /1.01 to keep "
        "the KL between perturbed and unperturbed branch softmaxes near its target. A biased "
        "epsilon-greedy variant (False) learned better at N = 5 and is offered for comparison.",
    ),
    Choice(
        "Reward scale and discount",
        ("AgentConfig.reward_scale", "AgentConfig.gamma"),
        "Rewards are multiplied by reward_scale before the TD target so that Q-values stay O(1) "
        "(a slot's reward is -1..-100). gamma = 0.95: a task lives about 6 slots.",
    ),
    Choice(
        "Deployed CERL policy",
        ("AgentConfig.deploy", "AgentConfig.select_episodes"),
        "'best': the RL agent's greedy policy or the fittest individual, whichever costs less on "
        "a few validation episodes (seeds disjoint from evaluation), as VEB-RL reports the better "
        "of RL and EA.",
    ),
    Choice(
        "Torch threads",
        ("BudgetConfig.torch_threads",),
        "1: the networks are small and on a busy 2-core machine more threads spin-wait (measured "
        "4x slower generations with 2).",
    ),
)


def current_value(setting: str):
    """The current default of ``"Class.field"`` (from dcicore.config or dcicore.budgets), or
    ``None`` for rules that live in a module rather than a field."""
    if "." not in setting or setting.startswith("dcicore."):
        return None
    cls_name, field = setting.split(".", 1)
    for module in ("dcicore.config", "dcicore.budgets"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, cls_name, None)
        if cls is not None:
            for f in fields(cls):
                if f.name == field:
                    return f.default
    raise KeyError(f"unknown setting {setting!r}")


def choices_table() -> list:
    """Rows (point, setting, value, reason) for the modelling-choices page."""
    rows = []
    for ch in CHOICES + AGENT_CHOICES:
        for k, s in enumerate(ch.settings):
            val = current_value(s)
            rows.append(
                {
                    "point": ch.point if k == 0 else "",
                    "setting": s,
                    "value": "(rule)" if val is None else repr(val),
                    "reason": ch.reason if k == 0 else "",
                }
            )
    return rows
