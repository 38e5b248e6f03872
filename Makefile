# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARCH   := $(shell uname -m)

# A torch/torchvision pair that import together. PyPI's CUDA builds run on a CPU too;
# a CPU-only torch wheel without its matching torchvision breaks the Qwen-VL processors.
ifeq ($(ARCH),aarch64)
TORCH_PAIR := torch==2.9.1 torchvision==0.24.1
else
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_PAIR)
	$(BIN)/pip install -e '.[test,export]'
	$(BIN)/python -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
	touch $@

demo: venv
	$(BIN)/vlmscope demo

test: venv
	$(BIN)/ruff check src
	$(BIN)/ruff format --check src
	$(BIN)/mypy src
	$(BIN)/python -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
