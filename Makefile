# Standalone install and test. Inside ComfyUI, use requirements.txt instead:
# ComfyUI brings its own torch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision are installed here, never declared as package dependencies.
TORCH_PKGS ?= torch torchvision
PYTEST_ARGS ?=

.PHONY: install test test-comfyui test-browser demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-run the editable install only when the packaging metadata changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.txt
	@$(BIN)/python -c "import torch, torchvision" 2>/dev/null || \
	  { echo "installing $(TORCH_PKGS) (not importable in $(VENV))"; $(BIN)/python -m pip install -q $(TORCH_PKGS); }
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	@touch $@

install: $(VENV)/.installed

# -rs prints why tests were skipped (no ../shared data, no GPU, no COMFYUI_PATH).
test: install
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

# Inside a real ComfyUI: COMFYUI_PATH=<checkout> [COMFYUI_PYTHON=<its python>] make test-comfyui
test-comfyui: install
	@test -n "$(COMFYUI_PATH)" || { echo "set COMFYUI_PATH to a ComfyUI checkout"; exit 2; }
	$(BIN)/python -m pytest -q -rs -m comfyui $(PYTEST_ARGS)

# The front end in Debian's chromium (apt-get install chromium chromium-driver): COMFYUI_PATH=<checkout> make test-browser
test-browser: install
	@test -n "$(COMFYUI_PATH)" || { echo "set COMFYUI_PATH to a ComfyUI checkout"; exit 2; }
	$(BIN)/python -m pytest -q -rs -m browser $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m iqa_map demo --output out/demo

bench: install
	$(BIN)/python -m benchmarks.bench_edict

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
