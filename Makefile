# Two commands for a fresh machine: `make demo` and `make test` (both run `make setup` first).
PY := .venv/bin/python

.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

# Unit tests and real-ComfyUI tests run in two pytest processes (see scripts/run_tests.py);
# extra pytest arguments: make test PYTEST_ARGS="-k sampler"
test: setup
	$(PY) scripts/run_tests.py $(PYTEST_ARGS)
