# Every target sets up what it needs: a fresh clone only needs Python 3.11 and `make`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
# The user-supplied offline copy of MNIST (see ../shared/data/mnist/README.md) when present;
# otherwise data/mnist, where the loader downloads the files with MD5 checks.
DATA    ?= $(if $(wildcard ../shared/data/mnist/train-labels-idx1-ubyte*),../shared/data/mnist,data/mnist)
ARGS    ?=

.PHONY: setup compare train study ui test lint bench mutate clean-store close-stale

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -qq --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# MNIST's folder, unless ARGS picks another dataset (data=fashion_mnist finds its own).
ROOT     = $(if $(findstring data=,$(ARGS)),,data.root=$(DATA))

compare: $(STAMP)
	$(PY) -m src.train +experiment=compare $(ROOT) $(ARGS)

train: $(STAMP)
	$(PY) -m src.train $(ROOT) $(ARGS)

study: $(STAMP)
	$(PY) -m pipelines.study $(ROOT) $(ARGS)

# End the RUNNING runs whose process is provably gone (killed outright) as KILLED; every
# invocation does this at its start too. ARGS="--uri URI" for another store.
close-stale: $(STAMP)
	$(PY) -m src.liveness $(ARGS)

ui: $(STAMP)
	.venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

# One pytest worker per core (pytest-xdist): the suite is mostly end-to-end subprocess runs
# of 1-thread training, which two processes overlap on two cores.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run --data $(DATA) $(ARGS)

# Mutation testing of the core, a score per module (README "Development"); not part of CI or
# `make test`. ARGS picks modules, e.g. `make mutate ARGS="stats idx"`.
mutate: $(STAMP)
	$(PY) -c "import mutmut" 2>/dev/null || \
		$(PY) -m pip install -qq --disable-pip-version-check -e '.[dev,mutate]'
	$(PY) -m tools.mutation_report $(ARGS)
