# facecl: `make demo` and `make test` work as the first command on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facecl-installed
# What pip installs from this machine's local disk (a CUDA build that also runs on CPU).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install test test-all lint typecheck demo bench bench-peers gpu-check study clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check facecl tests benchmarks
	$(BIN)/ruff format --check facecl tests benchmarks

typecheck: install
	$(BIN)/mypy facecl

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# Every benchmark (< 15 min on 2 cores) into benchmarks/results.json. The peers it compares
# against get their own venv first (bench-peers); if that cannot be made, the benchmark that
# needs it says so in one line and the others still run.
bench: install
	-$(MAKE) --no-print-directory bench-peers
	PATH="$(CURDIR)/$(BIN):$$PATH" bash benchmarks/run_all.sh

# facenet-pytorch (pinned), the align benchmark's peer, in .bench/fnp beside our torch:
# never a facecl dependency.
FACENET_SPEC ?= facenet-pytorch==2.6.0
PEER_VENV    := .bench/fnp
bench-peers: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed: $(STAMP) benchmarks/make_peer_venv.sh
	bash benchmarks/make_peer_venv.sh $(BIN)/python $(PEER_VENV) $(FACENET_SPEC)

# Everything that needs a GPU in one command (< 8 min on one GPU): the GPU-marked tests, the
# GPU benchmarks and a CUDA+AMP chain on the sample; figures in gpu_check.json. Without CUDA:
# "no CUDA device: skipped", exit 0.
gpu-check: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/gpu_check.py --out gpu_check.json

# The full-LFW study (needs ../shared/data): every variant x the config's seeds (0, 1, 2) on
# the CPU config; `make study SEEDS="--seed 0"` runs a subset (results merge into one table,
# finished steps are reused from their manifests). Every run's metrics also go to the
# committed ledger docs/results_ledger.json, so seeds run on other machines count too.
SEEDS ?=
study: install
	$(BIN)/facecl study experiments/lfw_view1_cpu.toml -o runs/study_cpu $(SEEDS) --results docs/results.md --ledger docs/results_ledger.json

clean:
	rm -rf demo_out .pytest_cache .mypy_cache gpu_check.json .bench
