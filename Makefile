# Two commands do all the set-up on a fresh machine:
#   make up             the local stack: .venv, a Pulumi CLI, kind with a registry, secrets, `pulumi up`
#   make test           create .venv, install everything the tests need, run lint + tests
# Every Pulumi command goes through scripts/pulumi-up.sh, which points it at the stack's backend
# (local: .pulumi-local/state in this checkout; dev and prod: Pulumi Cloud, as CI).
# `make` alone prints the targets: each `##` comment below is its line in `make help`.
.DEFAULT_GOAL := help
STACK ?= local
ARGS ?=
KEY ?=
BASE ?= main
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
RENDER_DIR ?= build/render/$(STACK)
# The upstream source the runtime test builds: a local checkout (here and in CI, the offline
# copy beside the repository). Unset, the test clones imageContext at imageGitRef instead.
X402_UPSTREAM_SRC ?= $(wildcard $(abspath ..)/shared/upstream/ar-io-x402-bundler)
export X402_UPSTREAM_SRC

ifeq ($(strip $(STACK)),)
$(error STACK is empty: name a stack, STACK=local, dev or prod)
endif

.PHONY: help install up preview destroy check doctor init config secret pulumi env test lint render diff \
	bench bench-image clean e2e test-deps

help: ## this list
	@printf 'make TARGET [STACK=local|dev|prod]   (STACK defaults to local)\n\n'
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1|\2/' | \
		awk -F'|' '{printf "  %-12s %s\n", $$1, $$2}'
	@printf '\nThe README says which to run, in which order.\n'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed ## create .venv with the program's and the tests' Python packages

up: $(VENV)/.installed ## deploy STACK: checks what it needs (make doctor), then pulumi up
	bash scripts/pulumi-up.sh $(STACK) up $(ARGS)

preview: $(VENV)/.installed ## what up would change in STACK (no build, nothing changed)
	bash scripts/pulumi-up.sh $(STACK) preview $(ARGS)

destroy: $(VENV)/.installed ## remove STACK's deployment (protected data stays; docs/operations.md)
	bash scripts/pulumi-up.sh $(STACK) destroy $(ARGS)

check: ## after up: /health and the admin dashboard through port-forwards
	bash scripts/pulumi-up.sh $(STACK) check

doctor: $(VENV)/.installed ## every missing or wrong prerequisite of STACK at once, each with its fix
	$(PY) -m tools.doctor --stack $(STACK)

init: ## create (or select) STACK on its backend, so its secrets can be set before the first up
	bash scripts/pulumi-up.sh $(STACK) init

# `pulumi config $(ARGS)` on the stack's backend, e.g.
#   make config STACK=dev ARGS="set x402-bundler:apiReplicas 2"
config: ## pulumi config ARGS on STACK's backend
	bash scripts/pulumi-up.sh $(STACK) config $(ARGS)

# A secret from stdin, never an argument: make secret STACK=dev KEY=arweaveWallet < wallet.json
secret: ## set secret KEY of STACK from stdin (make secret STACK=dev KEY=arweaveWallet < wallet.json)
	@test -n "$(KEY)" || { echo "make secret: name the key, KEY=<key> (docs/configuration.md lists them); the value comes on stdin" >&2; exit 2; }
	@test ! -t 0 || { echo "make secret: the value of $(KEY) comes on stdin: make secret STACK=$(STACK) KEY=$(KEY) < file" >&2; exit 2; }
	bash scripts/pulumi-up.sh $(STACK) config set --secret x402-bundler:$(KEY)

# Any other Pulumi command on the stack's backend: make pulumi ARGS="stack output --json"
pulumi: ## any pulumi command ARGS on STACK's backend
	bash scripts/pulumi-up.sh $(STACK) pulumi $(ARGS)

# For a shell that runs bare `pulumi` commands: eval "$$(make -s env STACK=local)"
env: ## shell lines that point bare pulumi commands at STACK's backend
	@bash scripts/pulumi-up.sh $(STACK) env

test-deps: $(VENV)/.installed
	bash scripts/install-test-deps.sh

test: test-deps ## install what the tests need, then lint, unit tests and the runtime test (root)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory e2e

# The real bundler run from the rendered manifests of every stack (needs root; see README).
e2e: test-deps ## the runtime test alone
	$(PY) -m tests.e2e

lint: $(VENV)/.installed ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy components tools policy tests/e2e __main__.py
	$(VENV)/bin/mypy examples/consumer/__main__.py  # its own project: a second __main__ module

render: $(VENV)/.installed ## every object STACK would create, offline, into build/render/STACK
	$(PY) -m tools.render --stack $(STACK) --out $(RENDER_DIR)

diff: $(VENV)/.installed ## what this working tree changes against BASE (default main), every stack, offline
	$(PY) -m tools.diff --base $(BASE)

bench: $(VENV)/.installed ## how long rendering takes
	$(PY) bench/render.py

# Seed risk 5: the upstream Dockerfile's /app against the traced one, sizes and time to Ready
# (runs the dev stack's runtime test on each layout: root, about 15 minutes).
bench-image: test-deps ## the upstream against the traced image: sizes and time to Ready (root)
	$(PY) bench/image.py

clean: ## remove build output and caches
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
