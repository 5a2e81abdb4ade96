"""`make baselines`: system cost and completion rate of LC, EC, Random and Greedy against N.

Prints one line per (N, policy): the figures of the foundation issue's note and the shape of
the paper's Fig 7, measured with dcicore.baselines.evaluate on seeds 0..episodes-1.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dcicore.baselines import evaluate  # noqa: E402
from dcicore.config import SystemConfig  # noqa: E402


def main(ns=(5, 10, 20, 30, 50), episodes=5) -> None:
    print(f"{'N':>3} {'policy':>7} {'system_cost':>12} {'± std':>8} {'completion':>10} {'collab':>7} {'s':>5}")
    for n in ns:
        for name in ("LC", "EC", "Random", "Greedy"):
            t0 = time.perf_counter()
            r = evaluate(name, SystemConfig(num_devices=n), episodes=episodes, seed=0)
            print(f"{n:>3} {name:>7} {r['system_cost']:>12.1f} {r['system_cost_std']:>8.1f} "
                  f"{100 * r['completion_rate']:>9.1f}% {r['collaborations']:>7.1f} "
                  f"{time.perf_counter() - t0:>5.1f}", flush=True)


if __name__ == "__main__":
    main()
