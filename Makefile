# One entry point for newcomers and CI. `make test` and `make demo` install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck crd-check layers unit demo clean

# MLflow's own virtualenv installs in the background while the project's does (independent work).
$(STAMP): pyproject.toml scripts/install-tools.sh scripts/install-mlflow.sh
	bash scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -e; \
	bash scripts/install-mlflow.sh $(VENV)/tools/mlflow & mlflow=$$!; \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e '.[local,dev]'; \
	PYTHON=$(PY) bash scripts/install-tools.sh $(VENV)/bin; \
	wait $$mlflow
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

crd-check: setup
	$(PY) -m mlcanary.crd --check

layers: setup
	$(VENV)/bin/lint-imports

unit: setup
	$(PY) -m pytest tests/unit -q

# The test command README.md gives and .ci/run calls: static checks, the CRD drift check, then every
# test (unit, emulator, serving, analysis on a real Prometheus, routers, chart with real helm,
# integration with the real operator, end-to-end on the local stack) and the serving image built
# with Docker and answering one request (MLCANARY_DOCKER_TESTS=1; the script installs and starts
# dockerd itself). Two pytest workers (pytest-xdist): most tests wait on real processes (about 14
# minutes on this 2-core machine; three workers were slower and flakier). loadgroup keeps the Docker
# image tests (xdist_group "docker") in one worker, as the MLflow tests ("mlflow"): they share one
# dockerd and base image, one MLflow server per session.
test: lint typecheck crd-check layers
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH MLCANARY_DOCKER_TESTS=1 $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=25

demo: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/mlcanary demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
