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

.PHONY: install run test lint unit mpi-tests bench scaling commbench model clean

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
