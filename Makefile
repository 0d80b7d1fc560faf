# Two commands do all the set-up on a fresh machine:
#   make up             the local stack: .venv, a Pulumi CLI, kind with a registry, secrets, `pulumi up`
#   make test           create .venv, install everything the tests need, run lint + tests
# Every Pulumi command goes through scripts/pulumi-up.sh, which points it at the stack's backend
# (local: .pulumi-local/state in this checkout; dev and prod: Pulumi Cloud, as CI).
STACK ?= local
ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
RENDER_DIR ?= build/render/$(STACK)
# The upstream source the runtime test builds: a local checkout (here and in CI, the offline
# copy beside the repository). Unset, the test clones imageContext at imageGitRef instead.
X402_UPSTREAM_SRC ?= $(wildcard $(abspath ..)/shared/upstream/ar-io-x402-bundler)
export X402_UPSTREAM_SRC

.PHONY: install up preview destroy check init config pulumi env test lint render bench bench-image clean e2e test-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

up: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) up $(ARGS)

preview: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) preview $(ARGS)

destroy: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) destroy $(ARGS)

# After `up`: /health through a port-forward, and the admin dashboard with the password output.
check:
	bash scripts/pulumi-up.sh $(STACK) check

# Create (or select) the stack, so its secrets can be set before the first `up` (dev, prod).
init:
	bash scripts/pulumi-up.sh $(STACK) init

# `pulumi config $(ARGS)` on the stack's backend, e.g.
#   make config STACK=dev ARGS="set --secret x402-bundler:arweaveWallet" < wallet.json
config:
	bash scripts/pulumi-up.sh $(STACK) config $(ARGS)

# Any other Pulumi command on the stack's backend: make pulumi ARGS="stack output --json"
pulumi:
	bash scripts/pulumi-up.sh $(STACK) pulumi $(ARGS)

# For a shell that runs bare `pulumi` commands: eval "$$(make -s env STACK=local)"
env:
	@bash scripts/pulumi-up.sh $(STACK) env

test-deps: $(VENV)/.installed
	bash scripts/install-test-deps.sh

test: test-deps
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory e2e

# The real bundler run from the rendered manifests of every stack (needs root; see README).
e2e: test-deps
	$(PY) -m tests.e2e

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy components tools policy tests/e2e __main__.py
	$(VENV)/bin/mypy examples/consumer/__main__.py  # its own project: a second __main__ module

render: $(VENV)/.installed
	$(PY) -m tools.render --stack $(STACK) --out $(RENDER_DIR)

bench: $(VENV)/.installed
	$(PY) bench/render.py

# Seed risk 5: the upstream Dockerfile's /app against the traced one, sizes and time to Ready
# (runs the dev stack's runtime test on each layout: root, about 15 minutes).
bench-image: test-deps
	$(PY) bench/image.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
