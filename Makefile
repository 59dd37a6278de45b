# Casino aggregator. `make run` and `make test` are the only set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: deps system-deps up down status run test test-unit test-integration fuzz sim bench bench-replay loadgen lint format clean

$(STAMP): pyproject.toml sdk/python/pyproject.toml $(wildcard libs/*/__init__.py services/*/__init__.py)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[deps] installing Python packages into $(VENV) ..."
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]' -e './sdk/python[postgres]'
	@touch $(STAMP)

system-deps:
	@bash deploy/local/install-system-deps.sh

deps: system-deps $(STAMP)

up: deps                ## start the stack and the services in the background (idempotent)
	@$(BIN)/aggregator dev up

down:                   ## stop what `make up` started
	@if [ -x $(BIN)/aggregator ]; then $(BIN)/aggregator dev down; else echo "nothing was running"; fi

status:                 ## what runs where (`aggregator dev status` exits 3 when not all runs)
	@if [ -x $(BIN)/aggregator ]; then $(BIN)/aggregator dev status || true; else echo "not installed: run make up"; fi

RUN_SECONDS ?= 60

run: up                 ## the main job: stack + simulated providers, live summary, money check
	@$(BIN)/aggregator simulate --duration $(RUN_SECONDS)
	@echo "the stack keeps running: make status, make down"

test: deps              ## every test, against real Kafka and PostgreSQL
	@$(BIN)/pytest $(PYTEST_ARGS)

test-unit: deps
	@$(BIN)/pytest tests/unit tests/compat $(PYTEST_ARGS)

test-integration: deps
	@$(BIN)/pytest tests/integration $(PYTEST_ARGS)

fuzz: deps              ## every parser fuzz in full (shrunk in make test), and the API documents' conformance run
	@AGG_FUZZ=1 $(BIN)/pytest -m fuzz --timeout=0 tests/unit tests/e2e/test_openapi_conformance.py \
		tests/integration/test_wallet_openapi_conformance.py $(PYTEST_ARGS)

SEEDS ?= 20000
SIM_ARGS ?=

sim: deps               ## the deterministic simulator: SEEDS seeded fault schedules, invariants checked
	@$(BIN)/aggregator sim --seeds $(SEEDS) $(SIM_ARGS)

LOADGEN := var/bench/bin/loadgen
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

$(LOADGEN): $(wildcard bench/loadgen/*.go) bench/loadgen/go.mod
	@echo "[bench] building the load generator (Go) ..."
	@cd bench/loadgen && GOTOOLCHAIN=local GOFLAGS=-mod=mod $(GO) build -o ../../$(LOADGEN) .

loadgen: $(LOADGEN)

BENCH_ARGS ?=

bench: deps $(LOADGEN)  ## pipeline vs the relay and physical floors vs direct under open-loop load: bench/results/<UTC>.*
	@$(BIN)/python -m bench $(BENCH_ARGS)

REPLAY_ARGS ?= --events 1000000

bench-replay: deps      ## audit replay of a 1M-event journal: bench/results/replay-<UTC>.json
	@$(BIN)/python -m bench.replay $(REPLAY_ARGS)

lint: deps
	@$(BIN)/ruff check libs services tests bench sdk
	@$(BIN)/ruff format --check libs services tests bench sdk
	@$(BIN)/mypy libs services bench sdk/python/agg_operator_sdk sdk/python/examples

format: deps
	@$(BIN)/ruff format libs services tests bench sdk
	@$(BIN)/ruff check --fix libs services tests bench sdk

clean: down
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
