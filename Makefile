# Quickstart: `make run` (offline-ready portal on http://127.0.0.1:8000) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
SANDBOX_PORT ?= 8001

.PHONY: run test lint typecheck pytest lock audit bench proof clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The locks (requirements.txt, requirements-dev.txt) pin every package with its hashes:
# pip refuses anything else. Edit requirements*.in, then `make lock`.
$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

.env:
	$(PYTHON) scripts/dev_env.py .env

run: $(VENV)/.runtime .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py createcachetable
	$(PY) scripts/run.py --host $(HOST) --port $(PORT) --sandbox-port $(SANDBOX_PORT)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy .

pytest: $(VENV)/.dev
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Re-resolve the locks from requirements*.in (every transitive pin, hashes for every file
# PyPI has of it). Upgrade one package: make lock LOCK_ARGS="--upgrade-package django".
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock: $(VENV)/.dev
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in

# Known vulnerabilities (PyPI's advisory data) in every locked package; fails on any.
audit: $(VENV)/.dev
	$(VENV)/bin/pip-audit --strict --disable-pip --require-hashes -r requirements.txt -r requirements-dev.txt

# Benchmarks on PostgreSQL (BENCH_DATABASE_URL; docs/benchmarks.md), about 10 minutes;
# one of them: make bench BENCH_ARGS=refresh. Load comes from wrk if installed.
bench: $(VENV)/.dev
	$(PY) -m bench $(BENCH_ARGS)

# The reliability and security proofs (docs/evidence.md), on PostgreSQL: pytest-django
# creates and drops PROOF_TEST_DB on the server PROOF_DATABASE_URL names. Figures land
# in artifacts/proof/*.json. The fast subset of tests/proof runs in `make test`.
PROOF_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
PROOF_TEST_DB ?= test_jiraconnect_proof

proof: $(VENV)/.dev
	DATABASE_URL=$(PROOF_DATABASE_URL) TEST_PG_NAME=$(PROOF_TEST_DB) \
		$(VENV)/bin/pytest -m slow tests/proof $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) staticfiles artifacts .pytest_cache .mypy_cache .ruff_cache test-db.sqlite3*
