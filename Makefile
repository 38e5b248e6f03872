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

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test venv clean browser bench docs

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_PAIR)
	$(BIN)/pip install -e '.[test,export,bench,docs]'
	$(BIN)/python -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
	touch $@

demo: venv
	$(BIN)/vlmscope demo

browser:
	@test -x $(CHROMIUM) || command -v chromium >/dev/null || \
	  { echo "installing chromium (apt) for the browser tests"; \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium >/dev/null; }

test: venv browser
	$(BIN)/ruff check src benchmarks tests
	$(BIN)/ruff format --check src benchmarks tests
	$(BIN)/mypy src
	$(BIN)/python -m pytest -n 2 -q tests
	$(MAKE) docs

# The documentation site (build/site): strict, so a broken link or a missing reference fails.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Small-size runs of every benchmark; results land in benchmarks/results/*.json.
bench: venv
	$(BIN)/python -m benchmarks.run_all --small

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
