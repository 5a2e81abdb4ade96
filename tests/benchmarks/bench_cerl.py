"""Speed of one whole CERL generation at N = 50 with the paper's population (k = 50, J = 64).

The agent is ``AgentConfig`` with its defaults (5 RL gradient steps per generation) except the
population and J. A generation is Algorithm 1 once: sampling, the fitness of Eq 14 for all 50 individuals on 64
transitions, the CEM update, elite interaction, the RL agent's steps and gradient updates, and
the injection. The replay buffer is first filled (warm-up generations, not timed) so that every
timed generation does all of that work. Target: a median of at most 5 s on the CI machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from dcicore.budgets import AgentConfig  # noqa: E402
from dcicore.cerl import CERL  # noqa: E402
from dcicore.config import SystemConfig  # noqa: E402


def bench_cerl(num_devices: int = 50, generations: int = 5, population_size: int = 50,
               fitness_batch: int = 64, threads: int = 1) -> dict:
    """Median wall seconds of a CERL generation (and of its parts) at ``num_devices`` EDs.

    ``threads``: torch intra-op threads during the measurement (1, like ``train``'s budgets;
    0 keeps torch's setting)."""
    from dcicore.nets import tune_cpu_runtime

    prev = torch.get_num_threads()
    tune_cpu_runtime(threads if threads > 0 else None)  # glibc keeps freed blocks; torch threads
    try:
        return _bench(num_devices, generations, population_size, fitness_batch)
    finally:
        torch.set_num_threads(prev)


def _bench(num_devices, generations, population_size, fitness_batch) -> dict:
    config = SystemConfig(num_devices=num_devices)
    agent = AgentConfig(population_size=population_size, fitness_batch=fitness_batch,
                        learning_starts=fitness_batch)
    learner = CERL(config, agent, seed=0)
    learner.begin_epoch(0)
    while len(learner.buffer) < agent.learning_starts:
        learner.generation()
    logs = []
    for _ in range(generations):
        t0 = time.perf_counter()
        g = learner.generation()
        g["wall"] = time.perf_counter() - t0
        logs.append(g)
    assert not any(g["warmup"] for g in logs)
    n = num_devices
    med = lambda key: float(statistics.median(g[key] for g in logs))  # noqa: E731
    return {
        f"generation_s_N{n}": med("wall"),
        f"generation_fitness_s_N{n}": med("fitness_s"),
        f"generation_elite_s_N{n}": med("elite_s"),
        f"generation_rl_s_N{n}": med("rl_s"),
    }


if __name__ == "__main__":
    for key, value in bench_cerl().items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
