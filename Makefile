# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create .venv on first use and reuse it afterwards. `make docs` builds the
# documentation site into docs/_build/html (warnings are errors).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: demo test lint docs benchmarks mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, so nothing pulls a multi-GB CUDA build
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[rl,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ml3 demo

test: $(STAMP)
	$(BIN)/python -m pytest

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	MPLBACKEND=Agg $(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check .

benchmarks: $(STAMP)
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

# Mutation testing ([tool.mutmut] in pyproject.toml): slow (hours on 2 cores), not in CI.
mutation: $(STAMP)
	$(BIN)/python -m pip install -e ".[mutation]"
	$(BIN)/mutmut run
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) results .pytest_cache mutants docs/_build docs/api
