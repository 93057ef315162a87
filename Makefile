# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
# TORCH picks the torch build: the default takes the CPU wheel (from local disk on CI-like
# machines); on a GPU machine use e.g. `make demo TORCH="torch>=2.1"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: demo test lint bench clean scipion-check relion-check

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,tomo]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nt2c demo -o $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest --durations=15 tests nt2c_scipion/tests

# make lint: ruff's lint (pycodestyle, pyflakes, import order) and format check (pyproject.toml); CI runs it
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# make bench: its own virtualenv for the baselines (CPU torch, Topaz without torchvision, BM3D),
# never in the package's dependencies, and the third-party simulators (ttsim3d, torch-fourier-slice,
# torch-ctf) that judge the restorers on data the project did not make; then speed/memory benches and the side-by-side comparison.
EXT_VENV := benchmarks/.venv-external
EXT_STAMP := $(EXT_VENV)/.installed

$(EXT_STAMP):
	$(PYTHON) -m venv $(EXT_VENV)
	$(EXT_VENV)/bin/pip install --quiet --upgrade pip
	$(EXT_VENV)/bin/pip install --quiet "$(TORCH)"
	$(EXT_VENV)/bin/pip install --quiet --no-deps topaz-em==0.3.20
	$(EXT_VENV)/bin/pip install --quiet tqdm h5py numpy pandas psutil scikit-learn scipy pillow future mrcfile \
		"setuptools<81" bm3d==4.0.3 bm4d==4.2.5
	$(EXT_VENV)/bin/pip install --quiet "$(TORCH)" ttsim3d==0.4.2 torch-fourier-slice==0.6.0 torch-ctf==0.6.0 torch-fourier-filter==0.6.0
	touch $(EXT_STAMP)

bench: $(STAMP) $(EXT_STAMP)
	cd benchmarks && ../$(PY) bench_simulate.py && ../$(PY) bench_denoise.py && ../$(PY) bench_compare.py \
		&& ../$(PY) bench_real_picked.py && ../$(PY) bench_noise_model.py && ../$(PY) bench_ice_gradient.py && ../$(PY) bench_tomo.py && ../$(PY) bench_particles.py \
		&& ../$(PY) bench_downstream.py && ../$(PY) bench_poses.py && ../$(PY) bench_tomo_third_party.py

# make relion-check: the slow RELION chains (scipion-em-relion's 3-D auto-refine with 3 MPI processes on
# SR3-restored particles, poses assigned to the raw particles, RELION's reconstruction); minutes on 2 CPUs.
relion-check: $(STAMP)
	NT2C_SLOW_TESTS=1 $(PY) -m pytest -v nt2c_scipion/tests/test_relion_particles.py

# make scipion-check: Scipion as a facility gets it (scipion-installer, installp --devel, the template
# chooser's code, the scheduler, uninstallp); Scipion is cached in .scipion-check/ (about 5 min the first time).
scipion-check:
	TORCH="$(TORCH)" bash scripts/scipion_check.sh

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
