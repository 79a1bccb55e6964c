# Every common command, so nobody has to remember them. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= uv
ARGS ?=
PYTEST_ARGS ?=
DATA ?= mnist
NPROC ?= 2
RUN := $(UV) run --frozen
# Compile .pyc files at install: uv does not by default, and where PYTHONDONTWRITEBYTECODE is set
# (or site-packages is read-only) every start would recompile torch from source (~4 s here).
export UV_COMPILE_BYTECODE := 1
export NO_MKDOCS_2_WARNING := 1  # (MkDocs Material's banner about its successor, on every build)
COMPOSE := docker compose

.PHONY: volumes .env build-cuda
.PHONY: help venv test test-slow test-docker lint lock build train train-ddp train-multinode shell evaluate data doctor \
        tensorboard mlflow train-local tensorboard-local mlflow-local base-image bench bench-data bench-labs bench-tune predict export slurm-up slurm-down \
        jupyter jupyter-local notebooks-strip bench-augment bench-startup docs docs-serve sbom

help: ## List the targets
	@grep -hE '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

# --- Docker (the product's front door) -----------------------------------------------------

.env: ## Write .env (or refresh it) with your UID/GID, so files in runs/ and data/ belong to you
	@docker/env.sh

volumes:  # made by you before any container runs, not by the Docker daemon as root
	@mkdir -p runs data code notebooks
	@if [ -n "$${SUDO_UID:-}" ]; then chown "$$SUDO_UID:$$SUDO_GID" runs data code notebooks; fi

# What run.json records of the image: the commit it was built from and when.
BUILD_ENV = GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null) IMAGE_CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ)
# The project's images a rebuild replaced (dangling, labelled ours) are removed after it.
PRUNE := docker image prune -f --filter label=io.train.project=train >/dev/null

build: .env volumes ## Build the CPU image and the TensorBoard and MLflow images
	$(BUILD_ENV) $(COMPOSE) build train tensorboard mlflow
	@$(PRUNE)

build-cuda: .env volumes ## Build the CUDA image (GPU hosts; see compose.gpu.yaml)
	$(BUILD_ENV) $(COMPOSE) --profile cuda build train-cuda
	@$(PRUNE)

train: .env volumes ## Train in the CPU image: make train ARGS="model=cnn data=digits"
	$(COMPOSE) run --rm train $(ARGS)

train-ddp: .env volumes ## Train on NPROC processes with torchrun (DDP): make train-ddp NPROC=2 ARGS="model=cnn"
	$(COMPOSE) run --rm train python -m train.launch --standalone --nproc_per_node=$(NPROC) \
		-m train $(ARGS)

MULTINODE = $(COMPOSE) -f compose.yaml -f compose.multinode.yaml
train-multinode: .env volumes ## Two containers as two torchrun nodes: make train-multinode ARGS="data=digits"
	TRAIN_ARGS='$(ARGS)' RDZV_ID=multinode-$$$$ $(MULTINODE) up --no-log-prefix node0 node1; \
	codes=$$($(MULTINODE) ps -a --format '{{.ExitCode}}' node0 node1 | sort -u | tr '\n' ' '); \
	$(MULTINODE) rm -f node0 node1 >/dev/null 2>&1; \
	[ "$$codes" = "0 " ] || { echo "a node failed (exit codes: $$codes)" >&2; exit 1; }

evaluate: .env volumes ## Score a run's best checkpoint: make evaluate RUN_DIR=/runs/digits_mlp/<time>
	$(COMPOSE) run --rm train python -m train.evaluate run=$(RUN_DIR)

data: .env volumes ## Download a data set (and weights) into ./data once: make data DATA=mnist WEIGHTS=resnet18
	$(COMPOSE) run --rm train-fetch data=$(DATA) $(if $(WEIGHTS),weights=$(WEIGHTS))

doctor: .env volumes ## Check GPU, shared memory, volumes and disk in the image
	$(COMPOSE) run --rm train-doctor

predict: .env volumes ## Predict on your files: make predict RUN_DIR=/runs/<name>/<time> INPUTS=./pics
	@src="$(abspath $(INPUTS))"; dst=/inputs; [ -d "$$src" ] || dst="/inputs/$$(basename "$$src")"; \
	$(COMPOSE) run --rm -v "$$src:$$dst:ro" train python -m train.predict run=$(RUN_DIR) inputs=/inputs $(ARGS)

export: .env volumes ## Export a run's model to ONNX, checked against PyTorch: make export RUN_DIR=...
	$(COMPOSE) run --rm train python -m train.export run=$(RUN_DIR) $(ARGS)

tensorboard: .env volumes ## Serve ./runs at http://127.0.0.1:6006 (its own small image; Ctrl-C stops)
	$(COMPOSE) up tensorboard

mlflow: .env volumes ## MLflow's UI on ./runs/mlflow.db at http://127.0.0.1:5000 (logger=[...,mlflow])
	$(COMPOSE) up mlflow

jupyter: .env volumes ## JupyterLab on ./notebooks at http://127.0.0.1:8888 (the token: in .env; Ctrl-C stops)
	@echo "JupyterLab: http://127.0.0.1:8888/lab?token=$$(grep '^JUPYTER_TOKEN=' .env | cut -d= -f2)"
	$(COMPOSE) up jupyter

shell: .env volumes ## A shell in the CPU image, with ./data and ./runs mounted
	$(COMPOSE) run --rm train bash

base-image: ## Build the Python base image locally (no registry access; see README)
	docker/base-image.sh

# --- Native ----------------------------------------------------------------------------------

venv: ## Create .venv exactly as uv.lock pins it (needs uv: pip install uv)
	$(UV) sync --frozen

bench: venv ## Benchmark against a plain loop, the DataLoader path and the hardware (~40 min)
	$(RUN) python -m bench.speed $(ARGS)

bench-data: venv ## Benchmark reading your own data: a large CSV, an image folder (~2 min)
	$(RUN) python -m bench.data $(ARGS)

bench-labs: venv ## Benchmark the course's tabular labs against the same steps by hand (~2 min)
	$(RUN) python -m bench.labs $(ARGS)

bench-tune: venv ## Benchmark the search: pruned vs unpruned vs a grid sweep to 95% (~5 min)
	$(RUN) python -m bench.tune $(ARGS)

bench-augment: venv ## Benchmark data.augment: none vs flip_crop vs trivialaugment at CNN@256 (~4 min)
	$(RUN) python -m bench.augment $(ARGS)

bench-startup: venv ## Benchmark start-up and exit against a hand-written script, per course lab (~3 min)
	$(RUN) python -m bench.startup $(ARGS)

train-local: venv ## Train natively: make train-local ARGS="model=cnn data=digits"
	$(RUN) python -m train $(ARGS)

jupyter-local: venv ## JupyterLab natively on ./notebooks (runs into ./runs, data from ./data)
	TRAIN_RUNS_DIR=$(CURDIR)/runs TRAIN_DATA_DIR=$(CURDIR)/data $(RUN) jupyter lab \
		--ip=127.0.0.1 --port=8888 --notebook-dir=notebooks

notebooks-strip: venv ## Strip outputs from notebooks/*.ipynb (a test refuses committed outputs)
	$(RUN) jupyter nbconvert --log-level=WARN --clear-output --inplace notebooks/*.ipynb

tensorboard-local: venv ## Serve ./runs natively at http://127.0.0.1:6006
	$(RUN) tensorboard --logdir runs --host 127.0.0.1 --port 6006

mlflow-local: venv ## MLflow's UI natively on ./runs/mlflow.db at http://127.0.0.1:5000
	$(RUN) mlflow server --backend-store-uri sqlite:///runs/mlflow.db \
		--default-artifact-root runs/mlartifacts --host 127.0.0.1 --port 5000 --workers 1

test: venv ## Unit and in-process integration tests (not the slow, docker and gpu tiers)
	$(RUN) pytest $(PYTEST_ARGS)

test-slow: venv ## The slow tier: tests that start processes (CLI, torchrun, kills; CI runs it)
	$(RUN) pytest -m slow $(PYTEST_ARGS)

test-docker: venv ## Build and run the images on a real Docker engine (docker tier)
	$(RUN) pytest -m docker $(PYTEST_ARGS)

SBOM ?= sbom.json
sbom: venv ## Write sbom.json: the venv's packages as a CycloneDX SBOM (each image has /app/sbom.json)
	$(RUN) cyclonedx-py environment --pyproject pyproject.toml --output-reproducible --of JSON \
		-o $(SBOM) .venv/bin/python

docs: venv ## Build the docs site into site/ (MkDocs Material, --strict: a broken link fails it)
	$(RUN) mkdocs build --strict

docs-serve: venv ## Serve the docs site at http://127.0.0.1:8000, rebuilt as you edit
	$(RUN) mkdocs serve -a 127.0.0.1:8000

lint: venv ## ruff: lint and format check
	$(RUN) ruff check train tests bench hydra_plugins
	$(RUN) ruff format --check train tests bench hydra_plugins

slurm-up: ## Start a one-machine SLURM cluster (root, Debian: munge, slurmctld, slurmd, slurmdbd)
	bash slurm/up.sh

slurm-down: ## Stop the SLURM cluster make slurm-up started
	bash slurm/down.sh

lock: ## Refresh uv.lock after editing pyproject.toml
	$(UV) lock
