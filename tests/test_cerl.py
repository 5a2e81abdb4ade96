"""CERL (dcicore.cerl): the fixed order of Algorithm 1 on a tiny system.

Every test runs a few generations of a 2-device system with a small population and small
networks, and checks one step of the algorithm against what it must be.
"""

import io

import numpy as np
import pytest
import torch

from dcicore import cem
from dcicore.budgets import AgentConfig
from dcicore.cerl import CERL, EnvStream, episode_seed
from dcicore.config import SystemConfig
from dcicore.population import flatten_params

CONFIG = SystemConfig(num_devices=2, max_tasks_per_device=2, episode_slots=10)


def tiny(**kw):
    base = dict(population_size=6, fitness_batch=8, batch_size=8, hidden=(8, 16, 16), learning_starts=16,
                rl_steps_per_generation=5, rl_updates_per_generation=2, elite_steps_per_generation=3,
                interacting_elites=1, buffer_size=500, target_update_every=4, eps_decay_steps=50)
    base.update(kw)
    return AgentConfig(**base)


def strip(logs):
    """Logs without wall-clock columns, NaN replaced by a marker (NaN != NaN)."""
    return [{k: ("nan" if isinstance(v, float) and v != v else v) for k, v in g.items() if not k.endswith("_s")}
            for g in logs]


def warm(learner):
    """Run warm-up generations until D is big enough for fitness; return their logs."""
    learner.begin_epoch(0)
    logs = []
    while len(learner.buffer) < learner.cfg.learning_starts:
        logs.append(learner.generation())
    return logs


def test_warmup_generations_only_let_the_rl_agent_explore():
    learner = CERL(CONFIG, tiny(), seed=0)
    logs = warm(learner)
    assert len(logs) == 4  # 16 transitions at 5 RL steps per generation
    for g in logs:
        assert g["warmup"] and g["elite_env_steps"] == 0 and g["updates"] == 0
        assert g["rl_env_steps"] == 5 and np.isnan(g["fitness_mean"]) and g["injected_slot"] == -1
    assert learner.cem_state.generation == 0


def test_elites_selection_and_eq15_update():
    learner = CERL(CONFIG, tiny(), seed=1)
    warm(learner)
    before = learner.cem_state
    g = learner.generation()
    fit = learner.fitness
    assert fit.shape == (6,) and bool(torch.all(torch.isfinite(fit)))
    assert g["fitness_max"] == pytest.approx(float(fit.max()))
    assert g["fitness_min"] == pytest.approx(float(fit.min()))
    assert g["fitness_mean"] == pytest.approx(float(fit.mean()))
    # the worst individual was replaced by the RL agent (step 6); the 3 elites are untouched,
    # so Eq 15 can be recomputed from the population as it is now
    order = torch.argsort(-fit, stable=True)
    elites = learner.thetas[order[:3]]
    lam = cem.elite_weights(3, "log").to(elites.dtype)
    assert torch.allclose(learner.cem_state.mean, lam @ elites, atol=1e-6)
    eps = cem.damping(0, 1e-3, 1e-5, 0.95)
    var = lam @ (elites - before.mean) ** 2 + eps
    assert torch.allclose(learner.cem_state.var, var, rtol=1e-5, atol=1e-9)
    assert g["cem_eps"] == pytest.approx(eps)


@pytest.mark.parametrize("interacting", [1, 2])
def test_only_the_fittest_interact(interacting):
    learner = CERL(CONFIG, tiny(interacting_elites=interacting), seed=2)
    warm(learner)
    for _ in range(2):
        size = len(learner.buffer)
        g = learner.generation()
        top = torch.argsort(-learner.fitness, stable=True)[:interacting].tolist()
        steps = g["interactions"]
        assert [steps[i] for i in top] == [3] * interacting
        assert sum(steps) == 3 * interacting == g["elite_env_steps"]
        assert all(s == 0 for i, s in enumerate(steps) if i not in top)
        # everything that acted went into the shared buffer D
        assert len(learner.buffer) - size == g["elite_env_steps"] + g["rl_env_steps"]


def test_no_interacting_elites_means_no_elite_steps():
    learner = CERL(CONFIG, tiny(interacting_elites=0), seed=2)
    warm(learner)
    g = learner.generation()
    assert g["elite_env_steps"] == 0 and sum(g["interactions"]) == 0


def test_rl_injection_replaces_the_worst_and_survives_the_next_sampling():
    learner = CERL(CONFIG, tiny(), seed=3)
    warm(learner)
    g = learner.generation()
    worst = int(torch.argmin(learner.fitness))
    assert g["injected_slot"] == worst == learner.injected
    assert torch.equal(learner.thetas[worst], flatten_params(learner.rl.q_net))
    assert torch.equal(learner.target_thetas[worst], flatten_params(learner.rl.target_net))
    injected = learner.thetas[worst].clone()
    before = learner.thetas.clone()
    g2 = learner.generation()
    # the injected individual kept its slot through sampling and was judged there
    assert g2["rl_fitness"] == pytest.approx(float(learner.fitness[worst]))
    rank = int((learner.fitness > learner.fitness[worst]).sum()) + 1
    assert g2["rl_rank"] == rank
    assert g2["rl_is_elite"] == (rank <= 3)
    # every other slot was redrawn; the injected one was kept (unless it is now the worst and
    # holds the newer RL network)
    new = g2["injected_slot"]
    for i in range(6):
        if i not in (worst, new):
            assert not torch.equal(learner.thetas[i], before[i])
    if new != worst:
        assert torch.equal(learner.thetas[worst], injected)


def test_injected_individual_is_the_rl_network_at_fitness_time():
    learner = CERL(CONFIG, tiny(), seed=4)
    warm(learner)
    learner.generation()
    slot = learner.injected
    rl_theta = flatten_params(learner.rl.q_net)
    batch_state = learner.np_rng.bit_generator.state
    # recompute the next generation's fitness of the RL slot by hand (same J transitions)
    from dcicore.population import td_fitness

    rng = np.random.default_rng()
    rng.bit_generator.state = batch_state
    tr = learner.buffer.sample(learner.cfg.fitness_batch, rng=rng)
    expect = td_fitness(learner.rl.q_net, rl_theta[None], learner.target_thetas[slot][None], tr,
                        learner.cfg.gamma, learner.cfg.reward_scale)
    g = learner.generation()
    assert g["rl_fitness"] == pytest.approx(float(expect[0]), rel=1e-5)


@pytest.mark.parametrize("H", [1, 2])
def test_population_target_update_cadence(H):
    learner = CERL(CONFIG, tiny(target_every_generations=H), seed=5)
    warm(learner)
    for gen in range(1, 5):
        targets_before = learner.target_thetas.clone()
        g = learner.generation()
        slot = g["injected_slot"]
        others = [i for i in range(6) if i != slot]
        # the injected slot always carries the RL agent's own target network
        assert torch.equal(learner.target_thetas[slot], flatten_params(learner.rl.target_net))
        if gen % H == 0:
            assert g["target_update"]
            assert torch.equal(learner.target_thetas[others], learner.thetas[others])
        else:
            assert not g["target_update"]
            assert torch.equal(learner.target_thetas[others], targets_before[others])


def test_same_seed_same_run_and_state_dict_roundtrip():
    a, b = CERL(CONFIG, tiny(), seed=7), CERL(CONFIG, tiny(), seed=7)
    la, lb = warm(a), warm(b)
    for _ in range(2):
        la.append(a.generation())
        lb.append(b.generation())
    assert strip(la) == strip(lb)
    assert torch.equal(a.thetas, b.thetas)
    # a checkpoint is loadable with weights_only=True and restores the run
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = CERL(CONFIG, tiny(), seed=7)  # fresh: the checkpoint carries all the state
    c.load_state_dict(torch.load(buf, weights_only=True))
    c.rl_stream.begin_epoch(5)
    a.rl_stream.begin_epoch(5)
    for s in (a, c):
        for e in s.elite_streams:
            e.begin_epoch(5)
    ga, gc = a.generation(), c.generation()
    assert strip([ga]) == strip([gc])
    assert torch.equal(a.thetas, c.thetas) and torch.equal(a.cem_state.var, c.cem_state.var)


def test_deployed_policy_choices():
    learner = CERL(CONFIG, tiny(deploy="rl"), seed=8)
    pol, src = learner.policy()
    assert src == "rl"  # no fitness yet: the RL agent
    warm(learner)
    learner.generation()
    assert learner.policy()[1] == "rl"
    learner.cfg = tiny(deploy="elite")
    pol, src = learner.policy()
    assert src == "elite" and callable(pol)
    learner.cfg = tiny(deploy="best")
    with pytest.raises(ValueError, match="select_seed"):
        learner.policy()
    pol, src = learner.policy(select_seed=123)
    assert src in ("rl", "elite")
    from dcicore.env import DCIEnv

    env = DCIEnv(CONFIG)
    env.reset(seed=0)
    action = pol(env)
    assert action.shape == (CONFIG.max_tasks, 4)


def test_episode_seeds_and_streams():
    assert episode_seed(0, 1, 0, 0) == episode_seed(0, 1, 0, 0)
    seeds = {episode_seed(s, e, st, ep) for s in range(2) for e in range(3) for st in range(2) for ep in range(2)}
    assert len(seeds) == 24
    stream = EnvStream(CONFIG, seed=0, stream=0)
    stream.begin_epoch(0)
    assert stream.fresh
    seen = []
    for _ in range(CONFIG.episode_slots + 1):
        stream.step(np.zeros((CONFIG.max_tasks, 4), np.int64),
                    lambda o, a, r, o2, d, m, m2: seen.append(d))
    assert stream.episode == 2 and not any(seen)  # truncation is not termination
