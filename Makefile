# Set-up and everyday commands. A fresh clone needs only `make demo` and `make test`.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
# GPU users: make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
RUN_DIR     ?= runs/demo
SEEDS       ?=
OFFLINE_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 WANDB_MODE=disabled

.PHONY: install demo test test-fast lint bench gpu-check readme-results clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, so that the project's plain `torch` requirement is already satisfied (no CUDA wheels pulled).
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE_ENV) $(BIN)/rlphf pipeline benchmark=synthetic run_dir=$(RUN_DIR) $(if $(SEEDS),seeds=$(SEEDS))

test: $(STAMP)
	$(OFFLINE_ENV) $(BIN)/pytest tests

# the tests that train no model (those marked slow are left out): minutes less than `make test`
test-fast: $(STAMP)
	$(OFFLINE_ENV) $(BIN)/pytest -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check rlphf_cli tests scripts
	$(BIN)/ruff format --check rlphf_cli tests scripts
	# imports run one way: the layer table and the circle check in tests/test_layering.py
	$(BIN)/pytest -q -p no:cacheprovider tests/test_layering.py

readme-results: $(STAMP)
	$(BIN)/python scripts/readme_results.py $(RUN_DIR)

bench: $(STAMP)
	$(OFFLINE_ENV) $(BIN)/python scripts/bench_decode.py

# One CUDA device, bf16, at most 8 minutes: decoding, PCM overhead, training steps and serving at ~1B scale,
# written to gpu_check.json and gpu_check.md. GPU_CHECK_ARGS="--device cuda:1" picks another GPU;
# "--device cpu --tiny" is the smoke run the tests use.
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(OFFLINE_ENV) $(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
