# Quickstart: `make run` (offline-ready portal on http://127.0.0.1:8000) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
SANDBOX_PORT ?= 8001

.PHONY: run test lint typecheck pytest bench proof clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
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
