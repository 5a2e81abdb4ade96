"""train(): methods, history, checkpoints, exact resume, and a learning smoke test."""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from dcicore.baselines import evaluate
from dcicore.budgets import AgentConfig, BudgetConfig, budget
from dcicore.config import SystemConfig
from dcicore.train import CHECKPOINT_NAME, METHODS, WALL_KEYS, train

CONFIG = SystemConfig(num_devices=2, max_tasks_per_device=2, episode_slots=10)
AGENT = AgentConfig(population_size=6, fitness_batch=8, batch_size=8, hidden=(8, 16, 16), learning_starts=16,
                    rl_steps_per_generation=5, rl_updates_per_generation=2, elite_steps_per_generation=3,
                    buffer_size=500, target_update_every=4, eps_decay_steps=50, select_episodes=1)
TINY = BudgetConfig(name="tiny", epochs=4, episodes_per_epoch=1, eval_episodes=1, checkpoint_every=2, agent=AGENT)


def comparable(history):
    """History rows without the wall-clock columns, NaN replaced by a marker."""
    return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
             if k not in WALL_KEYS} for row in history]


def params(result):
    learner = result.agent
    out = {f"q.{k}": v for k, v in learner.rl.q_net.state_dict().items()}
    out.update({f"t.{k}": v for k, v in learner.rl.target_net.state_dict().items()})
    if hasattr(learner, "thetas"):
        out["thetas"] = learner.thetas
        out["target_thetas"] = learner.target_thetas
        out["mean"] = learner.cem_state.mean
        out["var"] = learner.cem_state.var
    return out


def same_params(a, b):
    pa, pb = params(a), params(b)
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_bad_method_and_budget():
    with pytest.raises(ValueError, match="'CERL', 'DDQN', 'D2QN'"):
        train("DQN", CONFIG, TINY, 0, progress=False)
    with pytest.raises(ValueError, match="budget name"):
        train("CERL", CONFIG, "tiny", 0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        train("CERL", CONFIG, TINY, -1, progress=False)
    with pytest.raises(ValueError, match="share_action"):
        AgentConfig(share_action="percent")
    for name in ("share_explore_power", "block_explore_power"):
        with pytest.raises(ValueError, match=name):
            AgentConfig(**{name: 0.0})


def test_history_rows_and_epoch_definition():
    res = train("CERL", CONFIG, dataclasses.replace(TINY, epochs=3), seed=0, progress=False)
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3]
    for r in h:
        for key in ("system_cost", "completion_rate", "collaborations", "wall_s", "env_steps",
                    "fitness_mean", "rl_fitness", "loss", "sigma_mean", "deployed"):
            assert key in r
        # an epoch is one episode (episode_slots steps) of the RL agent, in generations of 5 steps
        assert r["rl_env_steps_epoch"] == CONFIG.episode_slots and r["generations"] == 2
    assert h[-1]["rl_env_steps"] == 3 * CONFIG.episode_slots
    assert h[-1]["env_steps"] == h[-1]["rl_env_steps"] + h[-1]["elite_env_steps"]
    assert h[-1]["elite_env_steps"] > 0
    # the evaluation is baselines.evaluate of the returned greedy policy on the fixed seeds
    ev = evaluate(res.policy, res.config, TINY.eval_episodes, TINY.eval_seed)
    assert ev["system_cost"] == pytest.approx(h[-1]["system_cost"])
    assert len(res.logs) == 6 and res.logs[-1]["epoch"] == 3


@pytest.mark.parametrize("method", METHODS)
def test_killed_run_resumes_to_the_same_result(method, tmp_path):
    straight = train(method, CONFIG, TINY, seed=3, progress=False)

    class Killed(Exception):
        pass

    def kill_at_epoch_3(row):
        if row["epoch"] == 3:  # after the epoch-2 checkpoint, before the epoch-4 one
            raise Killed

    with pytest.raises(Killed):
        train(method, CONFIG, TINY, seed=3, checkpoint_dir=str(tmp_path), progress=False,
              callback=kill_at_epoch_3)
    ck = torch.load(os.path.join(tmp_path, CHECKPOINT_NAME), weights_only=True)
    assert ck["epoch"] == 2
    resumed = train(method, CONFIG, TINY, seed=3, checkpoint_dir=str(tmp_path), progress=False)
    assert comparable(resumed.history) == comparable(straight.history)
    assert same_params(resumed, straight)


@pytest.mark.parametrize("share_action", ["relative", "absolute"])
def test_agent_share_action_sets_the_training_config(share_action):
    bud = dataclasses.replace(TINY, epochs=1, agent=dataclasses.replace(AGENT, share_action=share_action))
    res = train("DDQN", CONFIG, bud, seed=0, progress=False)
    assert res.config == dataclasses.replace(CONFIG, share_action=share_action)
    assert res.policy.config == res.config
    assert res.agent.stream.env.config.share_action == share_action  # the agent's own environment
    ev = evaluate(res.policy, res.config, 1, TINY.eval_seed)
    assert ev["system_cost"] == pytest.approx(res.history[-1]["system_cost"])  # evaluations use it too
    other = "absolute" if share_action == "relative" else "relative"
    with pytest.raises(ValueError, match="share_action"):
        evaluate(res.policy, dataclasses.replace(CONFIG, share_action=other), 1, 0)


def test_resume_extends_a_finished_run(tmp_path):
    straight = train("CERL", CONFIG, TINY, seed=4, progress=False)
    train("CERL", CONFIG, dataclasses.replace(TINY, epochs=2), seed=4, checkpoint_dir=str(tmp_path),
          progress=False)
    more = train("CERL", CONFIG, TINY, seed=4, checkpoint_dir=str(tmp_path), progress=False)
    assert comparable(more.history) == comparable(straight.history)
    assert same_params(more, straight)
    # a checkpoint of another run is refused; resume=False starts over
    with pytest.raises(ValueError, match="seed"):
        train("CERL", CONFIG, TINY, seed=5, checkpoint_dir=str(tmp_path), progress=False)
    again = train("CERL", CONFIG, dataclasses.replace(TINY, epochs=1), seed=4, checkpoint_dir=str(tmp_path),
                  resume=False, progress=False)
    assert comparable(again.history) == comparable(straight.history[:1])


def test_train_leaves_global_settings_alone():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(11)
    expect = torch.rand(3)
    torch.manual_seed(11)
    train("DDQN", CONFIG, dataclasses.replace(TINY, epochs=1), seed=0, progress=False)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.rand(3), expect)  # the caller's random stream is untouched


@pytest.fixture(scope="module")
def quick_n5():
    """CERL trained on the quick budget at N = 5 (one run shared by the two tests below)."""
    config = SystemConfig(num_devices=5)
    return config, train("CERL", config, budget("quick"), seed=0, progress=False)


@pytest.mark.slow
def test_quick_training_fits_the_td_target(quick_n5):
    """The evolutionary half works: the population's best TD fitness (Eq 14) rises."""
    config, res = quick_n5
    live = [g for g in res.logs if not g["warmup"]]
    assert res.history[0]["updates_epoch"] == 0 and res.history[-1]["updates_epoch"] > 0
    assert len(live) >= 10
    early = np.mean([g["fitness_max"] for g in live[:3]])
    late = np.mean([g["fitness_max"] for g in live[-3:]])
    assert late > 0.5 * early  # fitness is negative: the TD error at least halves
    assert np.mean([g["rl_is_elite"] for g in live]) > 0.5  # the RL individual is usually an elite


# The learning smoke test: relative shares, the additive (VDN) joint Q with the joint loss and
# the biased exploration of dcicore.dqn are what made it pass (it was xfail before them).
@pytest.mark.slow
def test_cerl_beats_random_at_n5_on_the_quick_budget(quick_n5):
    config, res = quick_n5
    episodes, seed = 5, 2024
    cerl = evaluate(res.policy, res.config, episodes, seed)["system_cost"]
    rnd = evaluate("Random", config, episodes, seed)["system_cost"]
    assert cerl < rnd, f"CERL {cerl:.1f} vs Random {rnd:.1f}"
