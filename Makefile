# MedLens — the two README commands are `make run` and `make test`; both do all set-up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test test-fast sample setup browser-deps bench validate clean

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,data]"
	@touch $(STAMP)

setup: $(STAMP)

# The real nuclei image + instance mask ship inside the stardist wheel: fetch the wheel from PyPI
# at set-up time (no install, no run-time download); the builder reads the two TIFFs out of it.
STARDIST_WHEEL := var/wheels/.stardist-0.9.2

$(STARDIST_WHEEL):
	@mkdir -p var/wheels
	@$(BIN)/pip download -q --no-deps stardist==0.9.2 -d var/wheels >/dev/null 2>&1 \
	  && touch $@ || echo "note: stardist wheel not available; the sample set is built without the nuclei image"

sample: $(STAMP) $(STARDIST_WHEEL)
	$(BIN)/python data/build_sample.py

## Serve the dashboard on the built-in sample dataset (http://127.0.0.1:$(PORT))
run: sample
	$(BIN)/streamlit run app.py --server.port $(PORT)

browser-deps:
	@bash scripts/ensure_chromium.sh

## Run the whole test suite (unit, AppTest, browser) with all set-up included
test: sample browser-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: sample
	$(BIN)/python -m pytest -q -m "not browser and not slow"

## Benchmarks: each prints medians and ratios to a baseline measured in the same run
bench: sample
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f --quick || exit 1; done

## Accuracy scripts (facts about the methods on the sample dataset; listed in the README)
validate: sample
	@for f in bench/accuracy_*.py; do echo "== $$f"; $(BIN)/python $$f --quick || exit 1; done

clean:
	rm -rf var/sessions test-artifacts .pytest_cache
