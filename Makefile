# mpigd: `make run` and `make test` work from a fresh clone; each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MPIRUN := $(VENV)/bin/mpirun
STAMP  := $(VENV)/.installed
NP     ?= 4
# One MPI rank is one core: keep BLAS and Numba from starting threads of their own.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export NUMBA_NUM_THREADS ?= 1
# Seconds before a hung MPI test run is killed (every test also has its own timeout).
MPI_TEST_TIMEOUT ?= 900
RUN_DIR := build/run
SYNTH   := build/synth-binary

.PHONY: install run test test-gpu lint unit mpi-tests bench scaling commbench model clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[mpich,test,plots]'
	touch $(STAMP)

install: $(STAMP)

# The main job: a 4-rank data-parallel logistic regression on synthetic data.
run: $(STAMP)
	test -d $(SYNTH)/train || $(PY) -m mpigd data synth --task binary --rows 200000 \
		--features 100 --shards 4 --seed 1 --out $(SYNTH)
	$(MPIRUN) -n $(NP) $(PY) -m mpigd train --data $(SYNTH)/train --test-data $(SYNTH)/test \
		--model logreg --optimizer lbfgs --epochs 30 --tol 1e-6 --l2 1e-4 --overwrite --out $(RUN_DIR)
	$(PY) -m mpigd eval $(RUN_DIR) --data $(SYNTH)/test
	@echo "run record: $(RUN_DIR)/run.json $(RUN_DIR)/metrics.jsonl $(RUN_DIR)/model.h5"
	$(PY) -m experiments.scaling experiments/studies/quick.toml --out results
	@echo "scaling study (weak, 1 and 2 ranks): curves results/quick/speedup.png" \
		"results/quick/efficiency.png results/quick/breakdown.png, CSV results/quick/points.csv"

lint: $(STAMP)
	$(VENV)/bin/ruff check mpigd kernels experiments tests
	$(VENV)/bin/ruff format --check mpigd kernels experiments tests

# Serial tests (including CLI tests that launch their own mpirun), then the MPI
# tests under real mpirun with 1, 2, 3 and 4 ranks (oversubscribed on small machines).
unit: $(STAMP)
	$(PY) -m pytest -q -rs --durations=20

mpi-tests: $(STAMP)
	set -e; for n in 1 2 3 4; do \
		echo "== mpirun -n $$n: MPI tests"; \
		timeout -k 10 $(MPI_TEST_TIMEOUT) $(MPIRUN) -n $$n $(PY) -m pytest --with-mpi -m mpi \
			-q -p no:cacheprovider tests; \
	done

test: lint unit mpi-tests

# The GPU tests on a GPU node, where a skip is a failure (MPIGD_TEST_GPU=1). $(VENV_GPU)
# is a separate venv with --system-site-packages, so a CuPy preinstalled on the node is
# seen (.venv has no CuPy); GPU_EXTRA=gpu-cuda12 or gpu-cuda13 installs CuPy from pip
# instead (one only, never next to a preinstalled CuPy). GPU_EXTRAS (default mpich): the
# other extras; GPU_EXTRAS= uses the node's MPI through its own mpi4py.
VENV_GPU   ?= .venv-gpu
GPU_EXTRA  ?=
GPU_EXTRAS ?= mpich
GPU_STAMP  := $(VENV_GPU)/.installed
GPU_TESTS  ?= tests/test_gpu.py tests/test_gpu_bench.py tests/test_device.py
comma := ,

$(GPU_STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV_GPU)
	echo '*' > $(VENV_GPU)/.gitignore
	$(VENV_GPU)/bin/python -m pip install --quiet -e \
		'.[$(subst $(eval) ,$(comma),$(strip test $(GPU_EXTRAS) $(GPU_EXTRA)))]'
	touch $(GPU_STAMP)

test-gpu: $(GPU_STAMP)
	$(VENV_GPU)/bin/python -c 'import cupy; print("CuPy", cupy.__version__, "GPUs", cupy.cuda.runtime.getDeviceCount())' \
		|| { echo "test-gpu: no usable CuPy in $(VENV_GPU): preinstall it on the node, or" \
		"rm -rf $(VENV_GPU) and make test-gpu GPU_EXTRA=gpu-cuda12 (or gpu-cuda13)" >&2; exit 1; }
	MPIGD_TEST_GPU=1 $(VENV_GPU)/bin/python -m pytest -q -rs $(GPU_TESTS)

bench: $(STAMP)
	$(PY) experiments/bench_kernels.py
	$(PY) experiments/bench_strategies.py
	$(PY) experiments/bench_mlp.py --quick

# Scaling study (STUDY file, RANKS=1,2,4 to override its rank counts), the MPI
# microbenchmark on NP ranks, and the performance model fitted to both.
STUDY ?= experiments/studies/weak-logreg.toml
STUDY_NAME = $(shell sed -n 's/^name *= *"\(.*\)".*/\1/p' $(STUDY))
scaling: $(STAMP)
	$(PY) -m experiments.scaling $(STUDY) --out results $(if $(RANKS),--ranks $(RANKS))

commbench: $(STAMP)
	$(MPIRUN) -n $(NP) $(PY) -m experiments.commbench --out results/commbench/p$(NP).csv

model: $(STAMP)
	$(PY) -m experiments.perfmodel results/$(STUDY_NAME) --commbench results/commbench/p*.csv

clean:
	rm -rf build results .pytest_cache
