"""Every chapter notebook runs top to bottom under nbval, in a fresh kernel, in the quick budget.

Each notebook runs in its own subprocess, so its wall time and the peak memory of its kernel
(``getrusage(RUSAGE_CHILDREN).ru_maxrss`` seen by a one-notebook wrapper) are measured one by
one. The claims of the text are checked by the notebooks' own ``assert`` cells. Figures are
written to ``_build/notebook_metrics.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.ipynb"))
PEAK_LIMIT_MB = 2048  # Binder's memory limit
TOTAL_LIMIT_S = 600  # all notebooks together, quick budget
METRICS = {}

WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(proc.stdout[-6000:]); print(proc.stderr[-3000:], file=sys.stderr)
print("METRICS " + json.dumps({"rc": proc.returncode, "wall_s": wall, "peak_mb": peak_kb / 1024}))
"""


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(notebook):
    env = dict(os.environ, DCI_BUDGET="quick", PLOTLY_RENDERER="notebook", PYTHONHASHSEED="0")
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "pytest", "--nbval-lax",
           "--nbval-current-env", "-p", "no:python", "-p", "no:cacheprovider", "-q",
           "--nbval-cell-timeout=600", str(notebook)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("METRICS ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads(line[-1][len("METRICS "):])
    METRICS[notebook.stem] = m
    _write_metrics()
    assert m["rc"] == 0, f"nbval failed for {notebook.name}:\n{proc.stdout[-5000:]}"
    assert m["peak_mb"] <= PEAK_LIMIT_MB, f"{notebook.name} peaked at {m['peak_mb']:.0f} MB"


def test_notebooks_are_stored_clean():
    for nb_path in NOTEBOOKS:
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{nb_path.name} stored with outputs"
                assert cell.get("execution_count") is None, f"{nb_path.name} stored with counts"


def test_total_notebook_time():
    if len(METRICS) < len(NOTEBOOKS):
        pytest.skip("run together with test_notebook_runs to measure the total")
    total = sum(m["wall_s"] for m in METRICS.values())
    assert total <= TOTAL_LIMIT_S, f"notebooks took {total:.0f} s together (limit {TOTAL_LIMIT_S})"


def _write_metrics():
    out = ROOT / "_build" / "notebook_metrics.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(METRICS, indent=1, sort_keys=True))
    os.replace(tmp, out)
