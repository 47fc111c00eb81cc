# ledgerstream: every target CI and developers use. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI := $(BIN)/ledgerstream
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

NATIVE := sinks/native
NATIVE_SOURCES := $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(NATIVE)/pyproject.toml $(wildcard $(NATIVE)/src/*.rs)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	@command -v cargo >/dev/null || { echo "cargo not found: the native row writer ($(NATIVE)) is built with Rust (https://rustup.rs)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q ./$(NATIVE)
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install ledgerstream with its dev tools and its native row writer (Rust)

up: install ## Start the local stack (Kafka KRaft, PostgreSQL, Redis, schema registry)
	$(CLI) stack up

down: install ## Stop the local stack
	$(CLI) stack down

status: install ## Show each service of the local stack
	$(CLI) stack status

run: up ## Run the pipeline end to end on the local stack and print what it did
	eval "$$($(CLI) stack env)" && $(CLI) topics apply && $(CLI) db migrate && $(CLI) schemas check \
		&& $(CLI) schemas register && started=$$(date +%s%3N) && $(CLI) demo && $(CLI) ledger check \
		&& $(CLI) schemas decode-check --from-time $$started

contracts: ## Recompile the test ERC-20 (solc and OpenZeppelin from npm) into connectors/contracts/TestToken.json
	cd connectors/contracts && npm ci --silent && node compile.js

lint: install ## ruff, mypy, the import rules between packages, the deployment files (render and schemas), rustfmt and clippy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(CLI) deploy check
	cd $(NATIVE) && cargo fmt --check && cargo clippy --release --quiet -- -D warnings

format: install ## Apply ruff's formatting and safe fixes, and rustfmt
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	cd $(NATIVE) && cargo fmt

gate: install ## The schema compatibility gate
	$(CLI) schemas check

unit: install ## Unit tests only (no services)
	$(BIN)/pytest -m unit -q

test: up ## Everything CI runs: lint, schema gate, unit and integration tests on the local stack
	$(MAKE) lint
	$(MAKE) gate
	$(CLI) topics apply
	$(CLI) db migrate
	eval "$$($(CLI) stack env)" && $(BIN)/pytest -q --durations=10

SEEDS ?= 20
MINUTES ?= 1
chaos: up ## Every chaos scenario for SEEDS seeds (default 20; long: about 1 min 15 s each), then the invariants
	$(CLI) topics apply
	$(CLI) db migrate
	eval "$$($(CLI) stack env)" && $(CLI) schemas register && \
		$(CLI) chaos --scenario all --seed 1 --seeds $(SEEDS) --minutes $(MINUTES)

.PHONY: help install up down status run contracts lint format gate unit test chaos
