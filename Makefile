# Set-up on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A GPU user picks their own build, e.g. make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# `make bench` runs us beside schnetpack and nequip, installed into their own environment
BENCH_VENV  ?= .venv-bench
BENCH_PY    := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
# schnetpack 2.1.1 pins sympy<=1.12, for which pip swaps torch: install it --no-deps, its imports named
SCHNETPACK_DEPS := matscipy hydra-core torch-ema fasteners dirsync tqdm pyyaml h5py
MACE_VENV  ?= .venv-mace
MACE_PY    := $(MACE_VENV)/bin/python
MACE_STAMP := $(MACE_VENV)/.installed

.PHONY: install demo test test-fast lint docs bench bench-gpu bench-accuracy bench-install bench-install-mace clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,xtb,qm9,experiment,docs]"
	touch $(STAMP)

demo: install
	$(PY) -m dens_lightning.demo

test: install docs
	$(PY) -m pytest -q -ra

# the documentation site (Sphinx, MyST Markdown); any warning fails the build
docs: install
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(PY) -m ruff check dens_lightning tests bench docs scripts
	$(PY) -m ruff format --check dens_lightning tests bench docs scripts

bench-install: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml bench/patch_schnetpack.py
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet $(TORCH)
	$(BENCH_PY) -m pip install --quiet -e ".[dev,xtb]" py-spy
	$(BENCH_PY) -m pip install --quiet nequip==0.19.1
	$(BENCH_PY) -m pip install --quiet --no-deps schnetpack==2.1.1
	$(BENCH_PY) -m pip install --quiet $(SCHNETPACK_DEPS)
	$(BENCH_PY) -m bench.patch_schnetpack
	touch $(BENCH_STAMP)

bench: bench-install
	$(BENCH_PY) -m bench.run

# MACE pins e3nn 0.4.4 (this package needs a newer one): its own environment, for bench-accuracy
bench-install-mace: $(MACE_STAMP)

$(MACE_STAMP): Makefile
	test -x $(MACE_PY) || $(PYTHON) -m venv $(MACE_VENV)
	$(MACE_PY) -m pip install --quiet --upgrade pip
	$(MACE_PY) -m pip install --quiet $(TORCH)
	$(MACE_PY) -m pip install --quiet mace-torch==0.3.16
	touch $(MACE_STAMP)

# time to accuracy: 20-minute training runs per code and data set, then MD stability of each model
# (hours; not part of bench; a rerun resumes, keeping finished runs)
bench-accuracy: bench-install bench-install-mace
	$(BENCH_PY) -m bench.accuracy
	$(BENCH_PY) -m bench.stability

# the GPU tables (peers, stages, matrix-throughput share) on cuda:0, where torch has CUDA
bench-gpu: bench-install
	$(BENCH_PY) -m bench.run --device cuda

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(MACE_VENV) runs .pytest_cache docs/_build
