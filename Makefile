# `make test`, `make demo` and `make docs` install everything they need into .venv, from nothing, idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench docs install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[zoo,test,experiments,docs]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

demo: $(STAMP)
	$(PY) experiments/lenet5_mnist.py

# The peers' columns (Flax, Equinox, PyTorch) need the `bench` extra; without it they print "-".
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) experiments/benchmark.py

# The documentation site (mkdocs.yml) into site/, strict: any warning fails it. Open site/index.html.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --clean --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
