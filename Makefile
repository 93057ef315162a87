# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
# TORCH picks the torch build: the default takes the CPU wheel (from local disk on CI-like
# machines); on a GPU machine use e.g. `make demo TORCH="torch>=2.1"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: demo test bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nt2c demo -o $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	cd benchmarks && ../$(PY) bench_simulate.py && ../$(PY) bench_denoise.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
