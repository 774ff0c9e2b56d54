# `make test`, `make demo` and `make docs` install everything they need into .venv, from nothing, idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-variants demo bench docs install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[zoo,test,experiments,docs]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

# The gradient and equality tests under other XLA CPU kernels, which sum in other orders the way another CPU
# does (tests/README.md): YNNPACK off, single-threaded Eigen, and 2 CPU devices (the 8-device tests set
# their own count). Not part of `make test`: about three times the tests it repeats.
VARIANT_TESTS := tests/test_registry.py tests/test_check.py tests/test_ops.py tests/test_losses.py tests/layers \
	tests/models tests/optim
test-variants: $(STAMP)
	XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=" $(PY) -m pytest -n 2 -q -p no:cacheprovider \
		$(VARIANT_TESTS) tests/training/test_parallel.py
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false" $(PY) -m pytest -n 2 -q -p no:cacheprovider \
		$(VARIANT_TESTS) tests/training/test_parallel.py
	JAX_NUM_CPU_DEVICES=2 $(PY) -m pytest -n 2 -q -p no:cacheprovider $(VARIANT_TESTS)

demo: $(STAMP)
	$(PY) experiments/lenet5_mnist.py

# The peers' columns (Flax, Equinox, PyTorch) need the `bench` extra; without it they print "-".
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) experiments/benchmark.py

# The documentation site (mkdocs.yml) into site/, strict: any warning fails it; then every derivation page's
# "Check it yourself" block and every guide run and must print what the page shows. Open site/index.html.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --clean --site-dir site
	$(PY) -m pytest -q -p no:cacheprovider tests/test_docs.py -k "derivation_checks or guide_runs"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
