# Every common command, so nobody has to remember them. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= uv
ARGS ?=
PYTEST_ARGS ?=
RUN := $(UV) run --frozen

.PHONY: help venv train evaluate test test-all lint lock tensorboard

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

venv: ## Create .venv exactly as uv.lock pins it (needs uv: pip install uv)
	$(UV) sync --frozen

train: venv ## Train natively: make train ARGS="model=cnn data=fashion_mnist trainer.max_epochs=5"
	$(RUN) python -m train $(ARGS)

evaluate: venv ## Score a run's best checkpoint on its test split: make evaluate RUN_DIR=runs/...
	$(RUN) python -m train.evaluate run=$(RUN_DIR)

test: venv ## Run the test suite (fast tier; docker/slow/gpu tests are separate)
	$(RUN) pytest $(PYTEST_ARGS)

lint: venv ## ruff: lint and format check
	$(RUN) ruff check train tests
	$(RUN) ruff format --check train tests

lock: ## Refresh uv.lock after editing pyproject.toml
	$(UV) lock

tensorboard: venv ## Serve runs/ at http://127.0.0.1:6006
	$(RUN) tensorboard --logdir runs --host 127.0.0.1 --port 6006
