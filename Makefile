# Two commands on a fresh clone: `make test` and `make demo`.
PYTHON ?= python3.11
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo bench docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=10

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m nlpattn.demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# docs/guide.md from docs/guide.md.in: small real runs under runs/docs/ (skipped when done),
# figures in docs/img/guide/, quoted numbers in docs/results/guide.json (~15 min on 2 cores)
docs: $(STAMP)
	$(PY) scripts/docs/build.py

clean:
	rm -rf $(VENV) runs .pytest_cache
