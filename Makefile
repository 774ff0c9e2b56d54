# `make test` and `make demo` install everything they need into .venv, from nothing, idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,experiments]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

demo: $(STAMP)
	$(PY) experiments/lenet5_mnist.py

bench: $(STAMP)
	$(PY) experiments/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
