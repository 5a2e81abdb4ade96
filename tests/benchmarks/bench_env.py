"""Environment speed: vectorized step + observation against the plain per-task reference.

Both environments run the same seeded scenario and the same pre-drawn action stream (shares
of 20-100 %, so many stages start and compete), so the ratio compares like with like.
"""

from __future__ import annotations

import time

import numpy as np

from dcicore.config import SystemConfig
from dcicore.env import DCIEnv


def _actions(cfg, steps, seed=0):
    rng = np.random.default_rng(seed)
    M = cfg.max_tasks
    return [
        np.stack(
            [rng.integers(0, cfg.num_nodes, M), rng.integers(0, cfg.num_layers, M),
             rng.integers(19, 100, M), rng.integers(0, cfg.num_subcarriers, M)], 1)
        for _ in range(steps)
    ]


def steps_per_s(num_devices: int, reference: bool, steps: int = 400, repeats: int = 3) -> float:
    """Best-of-``repeats`` environment steps per second (step includes the observation)."""
    cfg = SystemConfig(num_devices=num_devices, episode_slots=100_000)
    acts = _actions(cfg, steps)
    best = 0.0
    for _ in range(repeats):
        env = DCIEnv(cfg, reference=reference)
        env.reset(seed=0)
        t0 = time.perf_counter()
        for a in acts:
            env.step(a)
        best = max(best, steps / (time.perf_counter() - t0))
    return best


def bench_env() -> dict:
    out = {}
    for n in (10, 50):
        fast = steps_per_s(n, reference=False)
        ref = steps_per_s(n, reference=True, steps=100 if n == 50 else 200)
        out[f"env_steps_per_s_N{n}"] = fast
        out[f"env_reference_steps_per_s_N{n}"] = ref
        out[f"env_speedup_N{n}"] = fast / ref
    return out


if __name__ == "__main__":
    for k, v in bench_env().items():
        print(f"{k}: {v:.1f}")
