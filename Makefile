# The course in two commands:  make course   (run the notebooks)   make test   (run the tests)
# Both create .venv and install everything (CPU torch pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick
REPORTS ?= reports

.PHONY: install course test test-fast acceptance lint lab clean-runs help

help:
	@echo "make course   execute notebooks/NN_*.ipynb ($(PROFILE) profile) into $(REPORTS)/"
	@echo "make test     run the test suite (pytest)"
	@echo "make lint     ruff"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

course: $(STAMP)
	MPLBACKEND=Agg $(PY) -m ibsr_helpers.cli notebooks --profile $(PROFILE) --out $(REPORTS)

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -m "not acceptance" $(PYTEST_ARGS)

test-fast: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -m "not slow and not acceptance" $(PYTEST_ARGS)

# Real-data quality runs (quick-profile trainings to a Dice target): before resolving work
# that touches training. Needs IBSR18 (IBSR18_DIR or data/IBSR18).
acceptance: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -m acceptance -s $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check ibsr_helpers tests benchmarks
	$(PY) -m ruff format --check ibsr_helpers tests benchmarks

clean-runs:
	rm -rf runs $(REPORTS)
