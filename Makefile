# Two commands for a fresh machine: `make demo` and `make test` (both run `make setup` first).
PY := .venv/bin/python

.PHONY: setup setup-browser demo test

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

# The browser tests need Debian's chromium + playwright: installed here (idempotent; fails loudly
# when it cannot), so `make test` runs them instead of skipping.
setup-browser: setup
	bash scripts/setup_browser.sh

# Unit, real-ComfyUI and browser tests run in three pytest processes (see scripts/run_tests.py); a
# skip counts as a failure there. Extra pytest arguments: make test PYTEST_ARGS="-k sampler"
test: setup setup-browser
	$(PY) scripts/run_tests.py $(PYTEST_ARGS)
