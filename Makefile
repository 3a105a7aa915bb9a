# One command to set up and run the default pipeline (`make run`), one to set up and run
# the tests (`make test`). Both create .venv on first use and reinstall when pyproject changes.
PYTHON ?= python3
VENV ?= .venv
# tests/verl run in their own venv: verl 0.9.1 pins what the analysis env cannot share
VENV_VERL ?= .venv-verl
CORES ?= 2
BIN := $(VENV)/bin
BIN_VERL := $(VENV_VERL)/bin

.PHONY: run test main-test verl-test lint report clean-results

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull the multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	# the sparsity kernel compiled once into numba's cache, not in the first pipeline run
	$(BIN)/python -c "from offprincipal.metrics.bf16_kernel import precompile; precompile()"
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

report: $(BIN)/.installed
	$(BIN)/snakemake --report results/report.zip

# The whole test suite: the main one in .venv, then tests/verl in .venv-verl.
test: main-test verl-test

# pytest exits 5 when it collects nothing; an empty selection must fail, not pass quietly.
main-test: $(BIN)/.installed
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# verl's base install (no torch pin) + the CPU torch, then the project without its own pins
$(BIN_VERL)/.installed: envs/verl-test-requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_VERL)
	$(BIN_VERL)/pip install --quiet --upgrade pip
	$(BIN_VERL)/pip install --quiet torch==2.13.0
	$(BIN_VERL)/pip install --quiet -r envs/verl-test-requirements.txt
	$(BIN_VERL)/pip install --quiet --no-deps -e .
	touch $@

verl-test: $(BIN_VERL)/.installed
	$(BIN_VERL)/python -m pytest -q -p no:cacheprovider tests/verl; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(BIN)/.installed
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results/synthetic .snakemake
