# Annotated TRL — the two commands a newcomer needs (see README.md):
#   make serve   install everything, then serve the site on http://127.0.0.1:8000
#   make test    install everything (plus a headless Chromium), then run the whole test suite
# Both are idempotent: set-up steps re-run only when pyproject.toml or package-lock.json change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On these CPU machines `torch==2.13.0` resolves to the local CPU build; on a GPU machine the same
# pin from PyPI is the CUDA build. Installed first so nothing else can pull a different torch.
TORCH ?= torch==2.13.0
# trl 1.12.0, the last release with PPO, BCO, Nash-MD, XPO and PRM: the reference our ports are
# checked against (tests/support/parity.py). Pure Python, installed beside the environment, not into it.
ORACLE := .oracle/trl-1.12

.PHONY: serve test setup browser lint status lab bench

serve: setup
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

test: setup browser
	$(BIN)/pytest

setup: $(VENV)/.installed node_modules/.installed $(ORACLE)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[docs,test]"
	touch $@

$(ORACLE)/.installed: $(VENV)/.installed
	rm -rf $(ORACLE)
	$(BIN)/pip install --quiet --no-deps --target $(ORACLE) trl==1.12.0
	touch $@

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

status: setup
	$(BIN)/python tools/status.py > STATUS.md

# The lab: every method on the toy task, 3 seeds (about 10 minutes on 2 cores), then the site's
# charts from its results. Commit docs/lab/ afterwards.
lab: setup
	$(BIN)/annotated-trl lab --out runs/lab
	cp runs/lab/results.json docs/lab/results.json
	rm -rf docs/lab/figures
	$(BIN)/annotated-trl lab-figures docs/lab/results.json --out docs/lab/figures

# Benchmarks (not tests): ratios measured side by side, written to benchmarks/results/.
bench: setup
	$(BIN)/python -m benchmarks.scripts
	$(BIN)/python -m benchmarks.ports
	$(BIN)/python -m benchmarks.docs_build
	$(BIN)/python -m benchmarks.suite -m smoke --reps 3
	$(BIN)/python -m benchmarks.suite
