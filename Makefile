# Two commands do all the set-up on a fresh machine:
#   make up STACK=dev   create .venv, install, select/create the stack, `pulumi up`
#   make test           create .venv, install everything the tests need, run lint + tests
STACK ?= dev
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
RENDER_DIR ?= build/render/$(STACK)
# The upstream source the runtime test builds: a local checkout (here and in CI, the offline
# copy beside the repository). Unset, the test clones imageContext at imageGitRef instead.
X402_UPSTREAM_SRC ?= $(wildcard $(abspath ..)/shared/upstream/ar-io-x402-bundler)
export X402_UPSTREAM_SRC

.PHONY: install up preview test lint render bench clean e2e test-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

up: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) up

preview: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) preview

test-deps: $(VENV)/.installed
	bash scripts/install-test-deps.sh

test: test-deps
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory e2e

# The real bundler run from the rendered manifests of dev and prod (needs root; see README).
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

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
