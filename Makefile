# The course in two commands:  make course   (run the notebooks)   make test   (run the tests)
# Both create .venv and install everything (torch pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick
REPORTS ?= reports
# Optional: a wheel index for torch, e.g. the CPU-only builds (a few hundred MB instead of
# several GB of CUDA wheels on Linux):  make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install course record test test-fast acceptance lint lab readme-results clean-runs help

help:
	@echo "make course          execute notebooks/NN_*.ipynb ($(PROFILE) profile) into $(REPORTS)/"
	@echo "make record          run the notebooks on IBSR18 (quick) and keep their outputs in notebooks/"
	@echo "make test            run the test suite (pytest, without the acceptance runs)"
	@echo "make acceptance      real-data quality runs (minutes each; needs IBSR18)"
	@echo "make lab             open JupyterLab on notebooks/ in the project's environment"
	@echo "make readme-results  copy $(REPORTS)/results.md and figures into README.md and images/"
	@echo "make lint            ruff"
	@echo "make clean-runs      delete the runs the notebooks found (notebooks/runs, runs/) and $(REPORTS)/"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet -c constraints.txt torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,lab]"
	@touch $(STAMP)

install: $(STAMP)

course: $(STAMP)
	MPLBACKEND=Agg $(PY) -m ibsr_helpers.cli notebooks --profile $(PROFILE) --out $(REPORTS)

# The committed notebooks' outputs: a real IBSR18 quick run (IBSR18_DIR or data/IBSR18),
# from no runs, so every notebook shows its own training; their code hash is checked by a test.
record: $(STAMP)
	rm -rf notebooks/runs
	MPLBACKEND=Agg $(PY) -m ibsr_helpers.cli notebooks --record --out $(REPORTS)

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -m "not acceptance" $(PYTEST_ARGS)

test-fast: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -m "not slow and not acceptance" $(PYTEST_ARGS)

# Real-data quality runs (quick-profile trainings to a Dice target): before resolving work
# that touches training. Needs IBSR18 (IBSR18_DIR or data/IBSR18).
acceptance: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -m acceptance -s $(PYTEST_ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

readme-results: $(STAMP)
	$(PY) -m ibsr_helpers.cli report --reports $(REPORTS) --readme README.md --images images

lint: $(STAMP)
	$(PY) -m ruff check ibsr_helpers tests benchmarks
	$(PY) -m ruff format --check ibsr_helpers tests benchmarks

clean-runs:
	rm -rf runs notebooks/runs $(REPORTS)
