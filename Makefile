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
# The GPU set (vLLM): its own venv and pins, constraints-gpu.txt (numpy 2.3.5; see README).
GPU_VENV := .venv-gpu
GPU_BIN := $(GPU_VENV)/bin
GPU_STAMP := $(GPU_VENV)/.installed
GPU_EXTRAS := gpu,tracking,slurm-jobstep
# gpu-deps' resolver: a pip that reads wheel metadata by HTTP range requests (fast-deps), so
# the CUDA wheels are never downloaded. --isolated: PyPI only, no find-links wheel directories
# or user config (a local CPU torch build would hide the CUDA build's nvidia-* dependencies).
RESOLVER_PIP := pip==26.3
GPU_DEPS_PIP_OPTS ?= --isolated --timeout 60

.PHONY: venv run smol test lint dry-run gpu-deps gpu-venv gpu-check gpu-check-dry clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# .venv alone: what submits to Slurm (the slurm extra, through dev)
venv: $(STAMP)

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

# CI: pip resolves the GPU set (.[$(GPU_EXTRAS)] with constraints-gpu.txt) without installing
# it; fails on a conflict, or unless the set is exactly constraints-gpu.txt (.ci/gpu_deps.py).
gpu-deps:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; start=$$(date +%s); \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet $(GPU_DEPS_PIP_OPTS) "$(RESOLVER_PIP)"; \
	"$$tmp/venv/bin/pip" install $(GPU_DEPS_PIP_OPTS) --quiet --dry-run --ignore-installed \
	  --use-feature=fast-deps --report "$$tmp/report.json" \
	  -c constraints-gpu.txt -e ".[$(GPU_EXTRAS)]"; \
	$(PYTHON) .ci/gpu_deps.py check "$$tmp/report.json"; \
	echo "gpu-deps: resolved in $$(( $$(date +%s) - start )) s"

# On a Linux machine with CUDA (PyPI's torch wheel there is the CUDA build).
$(GPU_STAMP): pyproject.toml constraints-gpu.txt
	test -x $(GPU_BIN)/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_BIN)/pip install --quiet -c constraints-gpu.txt -e ".[$(GPU_EXTRAS)]"
	touch $(GPU_STAMP)

gpu-venv: $(GPU_STAMP)

# The paper path's GPU settings on the real-model tier, on one GPU, every output checked
# (stylemerge.cli.gpu_check), in the GPU venv (vLLM); gpu-check-dry validates and plans it on
# any machine (CI runs it), in .venv.
gpu-check: $(GPU_STAMP)
	$(GPU_BIN)/python -m stylemerge.cli.gpu_check --cores $(CORES)

gpu-check-dry: $(STAMP)
	$(BIN)/python -m stylemerge.cli.gpu_check --dry-run

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES) all

clean-venv:
	rm -rf $(VENV) $(GPU_VENV)
