# Two commands set everything up on a fresh machine: `make train` and `make test`.
# Each step is skipped when already done (the venv, the install, the data).
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
DATA_DIR ?= data
ARGS ?=

.PHONY: setup venv data train test test-slow lint bench bench-sweep gpu-bundle gpu-check clean-logs mutants

setup: $(STAMP) data

$(PY):
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when pyproject.toml changed.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# FashionMNIST offline: Debian's dataset-fashion-mnist package when we can install it,
# decompressed and verified into $(DATA_DIR)/FashionMNIST/raw by the app itself.
data: $(STAMP)
	@bash scripts/get_data.sh "$(DATA_DIR)"

train: setup
	$(PY) train.py $(ARGS)

# INITOPT_GPU_REHEARSAL=1: without a GPU, the GPU tests run on the CPU as a rehearsal of
# their own code (tests/test_gpu.py), so they do not rot between the rare GPU runs.
test: setup
	INITOPT_GPU_REHEARSAL=1 $(PY) -m pytest -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

lint: $(STAMP)
	.venv/bin/ruff check .

# In-loop views (one optimizer step, one epoch) and the whole-process view (docs/performance.md).
bench: setup
	$(PY) benchmarks/optimizer_step.py
	$(PY) benchmarks/epoch_time.py
	$(PY) benchmarks/landscape_grid.py
	$(PY) benchmarks/end_to_end.py

# Sweep layouts (sequential vs parallel jobs): minutes; see docs/performance.md.
bench-sweep: setup
	$(PY) benchmarks/sweep_layout.py $(ARGS)

# Everything GPU-specific, on a GPU machine without a network (docs/gpu.md). Here, beforehand:
#   make gpu-bundle      (.gpu/wheels: hydra-core, omegaconf, antlr4; .gpu/data: the four .gz)
# then on the GPU machine, with the repository and .gpu copied there:
#   make gpu-check       (= WHEELS=.gpu/wheels GPU_DATA=.gpu/data when .gpu exists)
# gpu-check uses the machine's python3 (PYTHON=... to change), not .venv.
WHEELS ?= $(wildcard .gpu/wheels)
GPU_DATA ?= $(wildcard .gpu/data)
gpu-bundle: setup
	bash scripts/gpu_bundle.sh --python $(PY)

gpu-check:
	bash scripts/gpu_check.sh $(if $(WHEELS),--wheels $(WHEELS)) $(if $(GPU_DATA),--data $(GPU_DATA)) $(ARGS)

# Mutation testing (mutmut): score per module into docs/mutation-scores.md. Long; not part of test.
# ARGS="optim init" runs some modules only; niced, it yields the CPU to everything else.
mutants: setup
	nice -n 19 $(PY) scripts/mutants.py $(ARGS)

clean-logs:
	rm -rf logs/train logs/probe logs/surfaces
