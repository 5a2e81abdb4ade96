"""`make bench`: print every speed figure of the project as `name: value` lines.

Each group runs if its module is present; figures are measured in this run, on this machine.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

GROUPS = [
    ("tests.benchmarks.bench_env", "bench_env"),
    ("tests.benchmarks.bench_agents", "bench_agents"),
    ("tests.benchmarks.bench_cerl", "bench_cerl"),
]


def main() -> int:
    for module, func in GROUPS:
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            print(f"# {module}: not available ({err})")
            continue
        for key, value in fn().items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
