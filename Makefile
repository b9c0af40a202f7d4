# Entry points on a fresh clone: `make run` (the whole workflow on the embedded default),
# `make smol` (the real-model tier, SmolLM2-135M: config/smol.yaml, results/smol/) and
# `make test` (the test suite). Each creates .venv and installs the pinned packages first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 8
# torch first, pinned alone (an index with a CPU build gives that one); a GPU user
# installs the CUDA build of the same version before `make` (see README).
TORCH := torch==2.13.0

.PHONY: run smol test lint dry-run gpu-check gpu-check-dry clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) all

smol: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) all --configfile config/smol.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

# The paper path's GPU settings on the real-model tier, on one GPU, every output checked
# (stylemerge.gpu_check); gpu-check-dry validates and plans it on any machine (CI runs it).
gpu-check: $(STAMP)
	$(BIN)/python -m stylemerge.gpu_check --cores $(CORES)

gpu-check-dry: $(STAMP)
	$(BIN)/python -m stylemerge.gpu_check --dry-run

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES) all

clean-venv:
	rm -rf $(VENV)
