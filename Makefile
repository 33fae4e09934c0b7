# The front door. `make help` lists the targets; CI calls `make test` (see .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
DEPS_STAMP  := $(VENV)/.locked
LOCKS       := requirements/runtime.txt requirements/dev.txt requirements/producers.txt
LOCK_ARGS   ?=
# Every file hash of every pinned version, so the lock installs on any platform; --universal
# keeps environment markers, so one lock serves Linux x86/ARM laptops and the python:3.11
# images alike (3.11 = requires-python's floor). An existing lock's pins are kept unless
# pyproject.toml needs others or LOCK_ARGS=--upgrade.
UV_COMPILE  := --quiet --generate-hashes --universal --python-version 3.11 \
               --custom-compile-command 'make lock'
PIP         := $(PY) -m pip --disable-pip-version-check
STATE_DIR   ?= .state
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The venv holds exactly requirements/dev.txt: when the lock changes it is rebuilt from empty
# (--clear), so a package dropped from the lock does not linger and hide a missing pin. Every
# package, pip and the build backend included, is checked against the lock's hashes.
$(DEPS_STAMP): requirements/dev.txt
	$(PYTHON_BOOT) -m venv --clear $(VENV)
	$(PIP) install --quiet --require-hashes -r requirements/dev.txt
	@touch $@

# The project itself, editable, without dependencies (the lock has them all) and without build
# isolation (which would download setuptools unhashed). Re-run when pyproject.toml changes.
$(STAMP): $(DEPS_STAMP) pyproject.toml
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $@

.PHONY: demo
demo: $(STAMP) ## Run the pipeline end to end (stack, processor, producer) and print its costs
	$(PY) scripts/demo.py --state-dir $(STATE_DIR)

.PHONY: demo-proxy
demo-proxy: $(STAMP) ## openai-SDK traffic of two tenants through the usage proxy; prints costs by tenant
	$(PY) scripts/demo_proxy.py --state-dir $(STATE_DIR)

.PHONY: down
down: $(STAMP) ## Stop what `make demo` started (processor, then the local stack)
	$(PY) scripts/demo.py --state-dir $(STATE_DIR) --down

.PHONY: docs
docs: $(STAMP) ## Regenerate the settings tables in docs/configuration.md
	$(PY) scripts/config_doc.py

.PHONY: vendor
vendor: $(STAMP) ## Re-download the page's front-end assets (npm pack) and verify their sha256 manifest
	$(PY) scripts/vendor_assets.py

.PHONY: install
install: $(STAMP) ## Create .venv from the lock requirements/dev.txt (a no-op when up to date)

.PHONY: lock
lock: $(DEPS_STAMP) ## Re-resolve requirements/*.txt from pyproject.toml (LOCK_ARGS=--upgrade: newest transitive pins)
	$(VENV)/bin/uv pip compile $(UV_COMPILE) $(LOCK_ARGS) pyproject.toml requirements/tools.in \
		-o requirements/runtime.txt
	$(VENV)/bin/uv pip compile $(UV_COMPILE) $(LOCK_ARGS) pyproject.toml requirements/tools.in \
		--extra dev -c requirements/runtime.txt -o requirements/dev.txt
	$(VENV)/bin/uv pip compile $(UV_COMPILE) $(LOCK_ARGS) requirements/producers.in \
		requirements/tools.in -c requirements/runtime.txt -o requirements/producers.txt

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

.PHONY: setup
setup: ## Debian tools the deployment checks need (docker-compose, nft, ip, ...); idempotent
	bash scripts/setup-debian.sh

.PHONY: test
test: setup lint ## The whole suite: lint + unit + integration + e2e (what CI runs)
	$(PY) -m pytest tests $(PYTEST_ARGS)

.PHONY: test-containers
test-containers: setup lint ## The whole suite with Kafka + mongo:7.0 in containers (needs Docker; docs/testing.md)
	TEST_SERVERS=containers $(PY) -m pytest tests -rs $(PYTEST_ARGS)

.PHONY: hadolint
hadolint: $(STAMP) ## Lint every Dockerfile with hadolint (also part of make test)
	$(PY) -m pytest tests/unit/test_dockerfiles.py -q

.PHONY: actionlint
actionlint: $(STAMP) ## Lint .github/workflows (actionlint built with go into .cache; also in make test)
	$(PY) scripts/actionlint.py

.PHONY: bench
bench: $(STAMP) ## Benchmarks (producer, validation, processor drain, latency); appends docs/benchmarks.md
	$(PY) scripts/bench.py $(BENCH_ARGS)

.PHONY: chaos
chaos: $(STAMP) ## Fault suite on a 3-broker cluster (~8 min): one line per fault, non-zero exit on loss/dup/diff
	$(PY) scripts/chaos.py $(CHAOS_ARGS)

.PHONY: vmsim
vmsim: setup $(STAMP) ## Four-host topology in network namespaces + firewall + smoke test (root)
	$(PY) scripts/vmsim.py run

.PHONY: stack-up
stack-up: $(STAMP) ## Start Kafka (KRaft) + FerretDB locally, create topics (idempotent)
	$(PY) scripts/stack.py --state-dir $(STATE_DIR) up

.PHONY: stack-status
stack-status: $(STAMP) ## Show what the local stack runs
	$(PY) scripts/stack.py --state-dir $(STATE_DIR) status

.PHONY: stack-down
stack-down: $(STAMP) ## Stop exactly the processes stack-up started
	$(PY) scripts/stack.py --state-dir $(STATE_DIR) down

# ---- deployment (needs a Docker engine; not exercised on the CI machine, see docs/deploy.md)
COMPOSE  ?= docker-compose
ENV_FILE ?= compose/.env
ROLE     ?=
ROLE_FILE = $(firstword $(wildcard compose/$(ROLE)-*.yml) compose/$(ROLE).yml)

$(ENV_FILE):
	@echo "$(ENV_FILE) is missing: cp compose/.env.example $(ENV_FILE) and set the addresses and passwords" >&2; exit 2

.PHONY: up
up: $(ENV_FILE) ## Start one VM role: make up ROLE=vm1|vm2|vm3|vm4 (docker-compose, with compose/.env)
	@test -n "$(ROLE)" || { echo "ROLE is required: make up ROLE=vm1|vm2|vm3|vm4" >&2; exit 2; }
	@test -f "$(ROLE_FILE)" || { echo "no compose file for ROLE=$(ROLE) under compose/" >&2; exit 2; }
	$(COMPOSE) -f $(ROLE_FILE) --env-file $(ENV_FILE) up -d --build

.PHONY: vm1-up vm2-up vm3-up vm4-up
vm1-up: ## Kafka role (compose/vm1-kafka.yml)
	$(MAKE) up ROLE=vm1
vm2-up: ## MongoDB role (compose/vm2-mongo.yml)
	$(MAKE) up ROLE=vm2
vm3-up: ## Processor role (compose/vm3-processor.yml)
	$(MAKE) up ROLE=vm3
vm4-up: ## Producers role (compose/vm4-producers.yml)
	$(MAKE) up ROLE=vm4

.PHONY: compose-up compose-down compose-config
compose-up: $(ENV_FILE) ## All four roles on this host (compose/single-host.yml)
	$(COMPOSE) -f compose/single-host.yml --env-file $(ENV_FILE) up -d --build
compose-down: $(ENV_FILE) ## Stop the single-host deployment (volumes kept)
	$(COMPOSE) -f compose/single-host.yml --env-file $(ENV_FILE) down
compose-config: setup ## Validate every compose file with the example env (no engine needed)
	@for f in compose/*.yml; do $(COMPOSE) -f $$f --env-file compose/.env.example config -q && echo "ok  $$f"; done

# ---- Kubernetes (Helm chart; validated offline, no cluster: docs/deploy-kubernetes.md)
CHART ?= deploy/helm/gpu-token-cost

.PHONY: helm
helm: $(STAMP) ## Build helm (pinned, from source with go install) into the cache; prints its path
	$(PY) -m devtools.helm

.PHONY: chart-sync
chart-sync: $(STAMP) ## Copy compose/monitoring alerts + Grafana dashboards into the chart's files/
	$(PY) scripts/chart_sync.py

.PHONY: chart-check
chart-check: $(STAMP) ## Lint, render and validate every chart variant (tests/integration/test_helm_chart.py)
	$(PY) scripts/chart_sync.py --check
	$(PY) -m pytest tests/integration/test_helm_chart.py tests/unit/test_chart_sync.py $(PYTEST_ARGS)
