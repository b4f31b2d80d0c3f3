# make demo / make test / make bench / make soak: each sets up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench soak redis-server clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[flask,starlette,django,redis,test,bench]'
	touch $(STAMP)

# Debian's redis-server, for the Redis store's tests; installed when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian's redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

demo: $(STAMP)
	$(PY) -m lembro demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src
	$(PY) -m mypy

test: $(STAMP) redis-server lint
	$(PY) -m pytest -q

bench: $(STAMP) redis-server
	$(PY) benchmarks/run.py

soak: $(STAMP)
	$(PY) -m lembro soak

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
