# Two commands do all the set-up on a fresh machine:
#   make up STACK=dev   create .venv, install, select/create the stack, `pulumi up`
#   make test           create .venv, install everything the tests need, run lint + tests
STACK ?= dev
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
RENDER_DIR ?= build/render/$(STACK)

.PHONY: install up preview test lint render bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

up: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) up

preview: $(VENV)/.installed
	bash scripts/pulumi-up.sh $(STACK) preview

test: $(VENV)/.installed
	bash scripts/install-test-deps.sh
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy components tools policy __main__.py

render: $(VENV)/.installed
	$(PY) -m tools.render --stack $(STACK) --out $(RENDER_DIR)

bench: $(VENV)/.installed
	$(PY) bench/render.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
