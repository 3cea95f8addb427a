# The two commands of the README: `make run` starts the server, `make test` runs every test.
# Both build .venv on first use from requirements-dev.lock (the server's and the tests'
# dependencies, every file checked against its hash). After editing requirements.txt,
# requirements-test.txt or bench/requirements.txt, `make lock` regenerates the locks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
LOCKS  := requirements.lock requirements-dev.lock bench/requirements.lock

# Exactly what a lock names, nothing resolved at install time.
INSTALL := pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r

.PHONY: run test test-fast bench bench-quick lock check-locks clean

# A lock that has fallen behind its pin file stops here, before anything is installed.
$(STAMP): $(LOCKS)
	$(PYTHON) .ci/check-locks
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/$(INSTALL) requirements-dev.lock
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m api $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/$(INSTALL) bench/requirements.lock
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --quick $(ARGS)

check-locks:
	$(PYTHON) .ci/check-locks

# pip-tools runs from a throwaway environment, never the project's. Each lock is
# constrained by the one before it, so the three agree on every shared package. Existing
# pins are kept unless a pin file changed them; LOCK_ARGS=--upgrade moves every transitive
# dependency to its newest version.
PIP_TOOLS := pip-tools==7.6.2
COMPILE = CUSTOM_COMPILE_COMMAND="make lock" "$$tools/bin/pip-compile" --quiet \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS)

lock:
	tools=$$(mktemp -d) && trap 'rm -rf "$$tools"' EXIT && \
	$(PYTHON) -m venv "$$tools" && \
	"$$tools/bin/pip" install --quiet --disable-pip-version-check $(PIP_TOOLS) && \
	$(COMPILE) -o requirements.lock requirements.txt && \
	$(COMPILE) -c requirements.lock -o requirements-dev.lock \
		requirements.txt requirements-test.txt && \
	$(COMPILE) -c requirements-dev.lock -o bench/requirements.lock \
		requirements.txt requirements-test.txt bench/requirements.txt
	$(PYTHON) .ci/check-locks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
