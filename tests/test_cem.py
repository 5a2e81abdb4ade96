"""CEM ask/tell (dcicore.cem) and the agent/budget configs (dcicore.budgets).

The Eq 15 test is worked by hand: k = 4 samples of P = 3 parameters, the two best are elites.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dcicore import cem
from dcicore.budgets import AgentConfig, BudgetConfig, budget, budget_from_env, with_agent

# --- Eq 15 by hand --------------------------------------------------------------------------
MEAN_OLD = [1.0, 0.0, -1.0]
SAMPLES = [
    [1.0, 2.0, 0.0],  # z_a, fitness 0.5  -> 2nd best
    [0.0, -1.0, 3.0],  # z_b, fitness -2.0 -> worst
    [2.0, 0.0, 1.0],  # z_c, fitness 1.0  -> best
    [-1.0, 1.0, 1.0],  # z_d, fitness -0.1 -> 3rd
]
FITNESS = [0.5, -2.0, 1.0, -0.1]
# elites, best first: z_c, z_a with λ = (3/4, 1/4)
# μ_new = 3/4·(2, 0, 1) + 1/4·(1, 2, 0) = (1.75, 0.5, 0.75)
MEAN_NEW = [1.75, 0.5, 0.75]
# z_c − μ_old = (1, 0, 2);  z_a − μ_old = (0, 2, 1)
# Σ_diag = 3/4·(1, 0, 4) + 1/4·(0, 4, 1) + ε = (0.75, 1.0, 3.25) + 0.01
VAR_NEW = [0.76, 1.01, 3.26]


def _state():
    return cem.init(torch.tensor(MEAN_OLD, dtype=torch.float64), 0.5)


def test_tell_equals_eq15_by_hand():
    new = cem.tell(_state(), torch.tensor(SAMPLES, dtype=torch.float64), FITNESS, [0.75, 0.25], eps=0.01)
    assert torch.allclose(new.mean, torch.tensor(MEAN_NEW, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(new.var, torch.tensor(VAR_NEW, dtype=torch.float64), atol=1e-12)
    assert new.generation == 1


def test_tell_is_the_diagonal_of_the_full_covariance_update():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4))
    f = rng.normal(size=6)
    mean_old = rng.normal(size=4)
    lam = cem.elite_weights(3, "log").numpy()
    order = np.argsort(-f)[:3]
    full = sum(l * np.outer(z[i] - mean_old, z[i] - mean_old) for l, i in zip(lam, order)) + 0.02 * np.eye(4)
    st = cem.init(torch.tensor(mean_old), 1.0)
    new = cem.tell(st, torch.tensor(z), f, "log", eps=0.02)
    assert np.allclose(new.var.numpy(), np.diag(full))
    assert np.allclose(new.mean.numpy(), lam @ z[order])


def test_fitness_is_maximised_and_only_the_top_half_counts():
    st = _state()
    z = torch.tensor(SAMPLES, dtype=torch.float64)
    a = cem.tell(st, z, FITNESS, "equal", eps=0.0)
    # changing the two losers' values must not move the distribution
    z2 = z.clone()
    z2[1] += 100.0
    z2[3] -= 100.0
    b = cem.tell(st, z2, FITNESS, "equal", eps=0.0)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.var, b.var)
    # equal weights: mean of z_c and z_a
    assert torch.allclose(a.mean, torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64))
    # flipping the sign of the fitness selects the other half
    c = cem.tell(st, z, [-f for f in FITNESS], "equal", eps=0.0)
    assert torch.allclose(c.mean, torch.tensor([-0.5, 0.0, 2.0], dtype=torch.float64))


def test_log_weights():
    w = cem.elite_weights(2, "log")
    assert math.isclose(float(w[0]), math.log(3) / (math.log(3) + math.log(1.5)), rel_tol=1e-12)
    w25 = cem.elite_weights(25, "log")
    assert math.isclose(float(w25.sum()), 1.0, rel_tol=1e-12)
    assert bool(torch.all(w25[:-1] > w25[1:]))
    assert torch.allclose(cem.elite_weights(4, "equal"), torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="kind"):
        cem.elite_weights(3, "rank")


def test_ties_keep_sample_order():
    st = cem.init(torch.zeros(1, dtype=torch.float64), 1.0)
    z = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    new = cem.tell(st, z, [0.0, 0.0, 0.0, 0.0], [1.0], eps=0.0)
    assert float(new.mean) == 1.0


def test_ask_draws_from_the_diagonal_gaussian_and_is_seeded():
    st = cem.init(torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.25, 1.0, 4.0]))
    g = torch.Generator().manual_seed(3)
    z = cem.ask(st, 20_000, g)
    assert z.shape == (20_000, 3) and z.dtype == torch.float32
    assert torch.allclose(z.mean(0), st.mean, atol=0.05)
    assert torch.allclose(z.var(0), st.var, rtol=0.05)
    z1 = cem.ask(st, 5, torch.Generator().manual_seed(7))
    z2 = cem.ask(st, 5, torch.Generator().manual_seed(7))
    assert torch.equal(z1, z2)


def test_cem_solves_a_toy_problem():
    target = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    st = cem.init(torch.zeros(4, dtype=torch.float64), 1.0)
    g = torch.Generator().manual_seed(0)
    for gen in range(60):
        z = cem.ask(st, 20, g)
        f = -((z - target) ** 2).sum(1)  # maximised
        st = cem.tell(st, z, f, "log", eps=cem.damping(gen, 1e-3, 1e-5, 0.95))
    assert torch.allclose(st.mean, target, atol=0.05)


def test_damping_schedule():
    assert cem.damping(0, 1e-3, 1e-5, 0.95) == pytest.approx(1e-3)
    assert cem.damping(1, 1e-3, 1e-5, 0.95) == pytest.approx(1e-5 + 0.95 * (1e-3 - 1e-5))
    assert cem.damping(10_000, 1e-3, 1e-5, 0.95) == pytest.approx(1e-5)


def test_state_dict_roundtrip():
    st = cem.tell(_state(), torch.tensor(SAMPLES, dtype=torch.float64), FITNESS, "log", eps=0.1)
    again = cem.CEMState.from_state_dict(st.state_dict())
    assert torch.equal(again.mean, st.mean) and torch.equal(again.var, st.var)
    assert again.generation == 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cem.init(torch.zeros(3), 0.0), "var"),
        (lambda: cem.init(torch.zeros(3), torch.ones(2)), "var"),
        (lambda: cem.ask(_state(), 0, torch.Generator()), "k must"),
        (lambda: cem.tell(_state(), torch.zeros(4, 2, dtype=torch.float64), FITNESS, "log", 0.0), "samples"),
        (lambda: cem.tell(_state(), torch.zeros(4, 3, dtype=torch.float64), [1.0, 2.0], "log", 0.0), "fitness"),
        (lambda: cem.tell(_state(), torch.zeros(4, 3, dtype=torch.float64), [1, 2, 3, float("nan")], "log", 0.0), "NaN"),
        (lambda: cem.tell(_state(), torch.zeros(4, 3, dtype=torch.float64), FITNESS, [0.5, 0.6], 0.0), "sum to 1"),
        (lambda: cem.tell(_state(), torch.zeros(4, 3, dtype=torch.float64), FITNESS, "log", -1.0), "eps"),
    ],
)
def test_cem_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- configs ---------------------------------------------------------------------------------
def test_agent_defaults_follow_the_paper():
    a = AgentConfig()
    assert (a.population_size, a.fitness_batch, a.target_every_generations) == (50, 64, 1)
    assert a.num_elites == 25  # top half of k = 50
    assert a.hidden == (64, 128, 256)
    assert budget("full").agent.population_size == 50


@pytest.mark.parametrize(
    "field, value",
    [("gamma", 1.0), ("lr", 0.0), ("batch_size", 0), ("population_size", 1), ("fitness_batch", 0),
     ("target_every_generations", 0), ("elite_fraction", 0.0), ("interacting_elites", 26),
     ("cem_init_var", 0.0), ("cem_eps_decay", 1.5), ("eps_start", 2.0), ("rl_steps_per_generation", 0)],
)
def test_agent_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        AgentConfig(**{field: value})


def test_agent_validation_of_choices():
    with pytest.raises(ValueError, match="cem_weights"):
        AgentConfig(cem_weights="rank")
    with pytest.raises(ValueError, match="deploy"):
        AgentConfig(deploy="mean")
    with pytest.raises(ValueError, match="hidden"):
        AgentConfig(hidden=(64, 128))


@pytest.mark.parametrize("field, value", [("epochs", 0), ("eval_episodes", 0), ("checkpoint_every", 0),
                                          ("episodes_per_epoch", 1.5)])
def test_budget_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BudgetConfig(**{field: value})


def test_named_budgets_grow():
    q, d, f = budget("quick"), budget("default"), budget("full")
    assert q.epochs < d.epochs < f.epochs == 200
    assert q.agent.population_size <= d.agent.population_size <= f.agent.population_size
    assert budget("quick") == q  # fresh but equal
    with pytest.raises(ValueError, match="quick"):
        budget("huge")
    assert with_agent(q, population_size=4).agent.population_size == 4
    assert dataclasses.asdict(q)["agent"]["population_size"] == q.agent.population_size


def test_budget_from_env(monkeypatch):
    monkeypatch.delenv("DCI_BUDGET", raising=False)
    assert budget_from_env().name == "quick"
    monkeypatch.setenv("DCI_BUDGET", "default")
    assert budget_from_env().name == "default"
    monkeypatch.setenv("DCI_BUDGET", "medium")
    with pytest.raises(ValueError, match="DCI_BUDGET.*'quick', 'default', 'full'"):
        budget_from_env()
