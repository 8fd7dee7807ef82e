# Quick start: `make demo`, then `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
OUT    ?= runs/demo

.PHONY: demo demo-quick test extras lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: a looser requirement could pull multi-GB CUDA wheels.
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/bastion demo --out $(OUT)

demo-quick: $(VENV)/.installed
	$(VENV)/bin/bastion demo --quick --out $(OUT)-quick

# The optional extras: `bastion serve` (serve), `bastion export --onnx` (onnx), `--log-to` (track).
extras: $(VENV)/.installed
	$(PIP) install --quiet -e '.[serve,onnx,track]'

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n 2 -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
