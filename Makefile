# The two commands README promises: `make demo` and `make test`. Both create .venv and install
# what they need on first use; a stamp file per extra makes a second run install nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed in the same pip command as the rest so the CPU build on disk is chosen.
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	HF_HUB_OFFLINE=1 $(BIN)/retain demo

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
