# The few commands people type. `make run` and `make test` set everything up on a fresh machine.
VENV    := .venv
PY      := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
PYTEST_ARGS ?=

.PHONY: setup run test test-fast lint format clean bench-import bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh scripts/gguf-converter.sh
	bash scripts/install.sh
	touch $@

## run: install if needed, then serve the app at http://127.0.0.1:7860
run: setup
	$(VENV)/bin/tunedeck serve

## test: install if needed (Chromium too), then run every test offline on CPU
test: setup
	bash scripts/install-chromium.sh
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

## test-fast: the unit tests only (no worker processes, no browser)
test-fast: setup
	$(OFFLINE) $(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check backend ui tests bench app.py cli.py
	$(VENV)/bin/ruff format --check backend ui tests bench app.py cli.py

format: setup
	$(VENV)/bin/ruff format backend ui tests bench app.py cli.py


## bench: training throughput vs bare TRL and a padded Trainer, memory, time to first step; writes bench/RESULTS.md
bench: setup
	$(OFFLINE) $(PY) bench/bench_train.py --write

## bench-import: generate a 1M-row (~550 MB) CSV, time preview and import, write bench/RESULTS.md (a few minutes)
bench-import: setup
	HF_HUB_OFFLINE=1 $(PY) bench/bench_import.py

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
