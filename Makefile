# The front door. `make help` lists the targets; CI calls `make test` (see .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
STATE_DIR   ?= .state
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

.PHONY: demo
demo: $(STAMP) ## Run the pipeline end to end (stack, processor, producer) and print its costs
	$(PY) scripts/demo.py --state-dir $(STATE_DIR)

.PHONY: down
down: $(STAMP) ## Stop what `make demo` started (processor, then the local stack)
	$(PY) scripts/demo.py --state-dir $(STATE_DIR) --down

.PHONY: docs
docs: $(STAMP) ## Regenerate the settings tables in docs/configuration.md
	$(PY) scripts/config_doc.py

.PHONY: install
install: $(STAMP) ## Create .venv and install pinned dependencies (a no-op when up to date)

.PHONY: lint
lint: $(STAMP) ## ruff + mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: $(STAMP) ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: unit
unit: $(STAMP) ## Unit tests (no services)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: integration
integration: $(STAMP) ## Integration tests against a real Kafka + FerretDB (started if not given)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

.PHONY: test
test: lint ## The whole suite: lint + unit + integration + e2e (what CI runs)
	$(PY) -m pytest tests $(PYTEST_ARGS)

.PHONY: stack-up
stack-up: $(STAMP) ## Start Kafka (KRaft) + FerretDB locally, create topics (idempotent)
	$(PY) scripts/stack.py --state-dir $(STATE_DIR) up

.PHONY: stack-status
stack-status: $(STAMP) ## Show what the local stack runs
	$(PY) scripts/stack.py --state-dir $(STATE_DIR) status

.PHONY: stack-down
stack-down: $(STAMP) ## Stop exactly the processes stack-up started
	$(PY) scripts/stack.py --state-dir $(STATE_DIR) down
