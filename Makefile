# The README's two commands: `make book` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install book test bench baselines clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	@# requirements.txt names PyTorch's CPU wheel page for Binder and laptops. A machine that
	@# reaches only PyPI (this project's CI) cannot resolve that host and would retry it for every
	@# package, so there we install from a copy without that line; torch then comes from the
	@# local CPU wheel.
	if $(PY) -c "import socket; socket.getaddrinfo('download.pytorch.org', 443)" 2>/dev/null; then \
		$(PY) -m pip install --quiet -r requirements.txt; \
	else \
		grep -v '^--find-links' requirements.txt > $(VENV)/requirements-offline.txt && \
		$(PY) -m pip install --quiet -r $(VENV)/requirements-offline.txt; \
	fi
	touch $(STAMP)

book: $(STAMP)
	DCI_BUDGET=$${DCI_BUDGET:-default} PLOTLY_RENDERER=notebook $(VENV)/bin/jupyter-book build . --all -W -n --keep-going

test: $(STAMP)
	$(PY) -m pytest tests -q

bench: $(STAMP)
	$(PY) tests/benchmarks/bench.py

clean:
	rm -rf _build .pytest_cache

baselines: $(STAMP)
	$(PY) tests/benchmarks/baselines_table.py
