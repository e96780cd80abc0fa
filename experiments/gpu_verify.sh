#!/bin/bash
# The verification run of the cupy backend on a GPU machine (../shared/gpu/README.md), in
# one script that finishes in under 8 minutes on one H200. From the repository root:
#
#   OUT=/some/dir bash experiments/gpu_verify.sh
#
# Steps, each with its own time limit, log ($OUT/<step>.log) and verdict in
# $OUT/summary.txt (the script goes on after a failure and exits 1 if any step failed):
#   setup      a venv (--system-site-packages: the machine's CuPy, numpy, numba, ...)
#              with mpich, mpi4py and pytest-mpi installed offline from .whl/ (below),
#              and a 2-rank mpirun check
#   versions   Python packages, CUDA, nvidia-smi, MPI
#   kernels    every kernel of kernels/*.cu compiled, registers and local memory (spills)
#   gpu-tests  tests/test_gpu*.py and tests/test_device.py with MPIGD_TEST_GPU=1; a skip
#              there is a failure
#   gpu-paths  paths unit tests cannot reach on a large GPU (many rows per warp, the
#              widest single-pass rows, the two-GEMM width, many softmax chunks)
#   bench      experiments/bench_gpu.py (4,000,000 x 100 and an MLP step) and a 6,143-
#              feature run (the two-GEMM path)
#   parity     2-rank --backend cupy training against --backend numba for every model
#              (and two more strategies), parameters and train losses within 1e-10
#              (float64), mpigd eval of both runs on the test split
#
# The machine has no network: the MPI wheels travel in the git-ignored .whl/ folder,
# fetched beforehand on a machine that has one:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl mpich==5.0.2 mpi4py==4.1.2 pytest-mpi==0.6
# Without .whl/ the machine's own mpi4py and mpirun are used, if it has them.
#
# Settings: OUT (default build/gpu-verify), PYTHON (python3), WHEELS (.whl), WORK
# (scratch: venv, data, runs; default a new temporary directory, not under OUT),
# JOBS (parity runs at once, default 6), DRY_RUN=1 (a machine without a GPU: the GPU
# steps are skipped, the tests may skip, and parity compares numpy with numba: checks
# this script itself).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-build/gpu-verify}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
JOBS=${JOBS:-6}
DRY_RUN=${DRY_RUN:-0}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mpigd-gpu-verify.XXXXXX")}
mkdir -p "$WORK"
VENV=$WORK/venv
PY=$VENV/bin/python
GPU_BACKEND=cupy
[[ $DRY_RUN == 1 ]] && GPU_BACKEND=numpy
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
FAILED=0
START=$SECONDS

# One MPI rank is one core; CuPy's kernel cache in scratch; no TF32 in parity checks.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
export CUPY_CACHE_DIR=$WORK/cupy-cache
unset CUPY_TF32
[[ $(id -u) == 0 ]] && export HYDRA_LAUNCHER=fork  # single-node mpirun without ssh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# step NAME LIMIT_S COMMAND...: run COMMAND (a function of this script or a program) with
# a time limit, its output in $OUT/NAME.log; record the verdict and the seconds it took.
step() {
    local name=$1 limit=$2 t0=$SECONDS rc verdict
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout -k 10 "$limit" bash -c "$(declare -f "$1" 2>/dev/null); \"\$@\"" _ "$@" \
        >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) verdict=PASS ;;
        3) verdict=SKIP ;;  # a GPU step in a dry run
        124 | 137) verdict="FAIL (over ${limit}s)" ;;
        *) verdict="FAIL (exit $rc)" ;;
    esac
    [[ $verdict == FAIL* ]] && FAILED=1
    printf '%-10s %-18s %4d s\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$SUMMARY"
    tail -n 4 "$OUT/$name.log" | sed 's/^/    /'
}

use_libmpi() {  # mpi4py loads the MPICH of the wheel, if it was installed
    if [[ -e $VENV/lib/libmpi.so.12 ]]; then export MPI4PY_LIBMPI=$VENV/lib/libmpi.so.12; fi
}

gpu_only() {  # exit 3 (SKIP) in a dry run
    if [[ $DRY_RUN == 1 ]]; then
        echo "dry run: no GPU step"
        exit 3
    fi
}

setup() {
    set -e
    "$PYTHON" -m venv --system-site-packages --without-pip "$VENV"
    # The venv sees whatever $PYTHON sees, even when $PYTHON is itself a venv's (the dry
    # run's); packages installed into the venv below come first.
    "$PYTHON" -c "import site; print('\n'.join(site.getsitepackages()))" \
        >"$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/mpigd-base.pth"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        # --prefix, not --target, which drops libmpi.so (../shared/gpu/README.md).
        # --ignore-installed: in the venv even where the base Python has the same versions.
        "$PY" -m pip install --no-index --no-deps --ignore-installed --prefix "$VENV" \
            "$WHEELS"/*.whl
        use_libmpi
    else
        echo "no wheels in $WHEELS: using this machine's mpi4py and mpirun"
    fi
    "$PY" -c "import mpi4py, pytest; print('mpi4py', mpi4py.__version__, mpi4py.__file__)"
    command -v mpirun
    timeout 60 mpirun -n 2 "$PY" -c "from mpi4py import MPI; c = MPI.COMM_WORLD
assert c.Get_size() == 2, 'mpirun started singletons, not one 2-rank world'
print(c.Get_rank(), c.Get_size(), MPI.Get_library_version().splitlines()[0])"
}

versions() {
    "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("numpy", "scipy", "numba", "h5py", "mpi4py", "sklearn", "pytest", "pytest_mpi",
             "xdist", "cupy"):
    try:
        module = importlib.import_module(name)
        print(f"{name:12s} {getattr(module, '__version__', '?'):12s} {module.__file__}")
    except Exception as exc:
        print(f"{name:12s} MISSING ({type(exc).__name__}: {exc})")
try:
    import cupy
    print("CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver",
          cupy.cuda.runtime.driverGetVersion(), "devices", cupy.cuda.runtime.getDeviceCount())
    cupy.show_config()
except Exception as exc:
    print("cupy unusable:", exc)
EOF
    mpichversion 2>/dev/null | head -3 || true
    "$PY" -c "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi -q -d CLOCK,MEMORY,ECC,PERFORMANCE | head -80
    else
        echo "no nvidia-smi"
        [[ $DRY_RUN == 1 ]] || return 1
    fi
}

kernels() {
    gpu_only
    "$PY" experiments/gpu_verify.py --out "$OUT/kernels.json" kernels
}

gpu_tests() {
    local parallel=() tests=(tests/test_gpu.py tests/test_gpu_bench.py tests/test_device.py)
    "$PY" -c "import xdist" 2>/dev/null && parallel=(-n 6)
    if [[ $DRY_RUN == 1 ]]; then
        "$PY" -m pytest -q -rs -p no:cacheprovider "${parallel[@]}" "${tests[@]}"
        return
    fi
    MPIGD_TEST_GPU=1 "$PY" -m pytest -q -rs -p no:cacheprovider "${parallel[@]}" \
        --junitxml="$OUT/gpu-tests.xml" "${tests[@]}" || return 1
    # MPIGD_TEST_GPU=1 turns require_gpu's skips into failures; any other skip fails too.
    "$PY" - "$OUT/gpu-tests.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
total = sum(int(s.get("tests", 0)) for s in suites)
print(f"{total} tests, {skipped} skipped")
sys.exit(1 if skipped or not total else 0)
EOF
}

gpu_paths() {
    gpu_only
    "$PY" experiments/gpu_verify.py --out "$OUT/gpu-paths.json" paths
}

bench() {
    gpu_only
    "$PY" experiments/bench_gpu.py --out "$OUT/bench_gpu.json" || return 1
    "$PY" experiments/bench_gpu.py --rows 100000 --features 6143 --repeats 3 --inner 3 \
        --out "$OUT/bench_gpu_6143.json"
}

# name | task | training options (the parity runs; float64 data, 2 ranks each)
PARITY_RUNS='linreg-lbfgs|regression|--model linreg --optimizer lbfgs --epochs 8
logreg-lbfgs|binary|--model logreg --optimizer lbfgs --epochs 8 --l2 1e-3
logreg-ps-sync|binary|--model logreg --optimizer sgd --lr 0.2 --batch-size 512 --epochs 2 --strategy ps-sync
logreg-local-sgd|binary|--model logreg --optimizer sgd --lr 0.2 --batch-size 512 --epochs 2 --strategy local-sgd
svm-hinge|binary|--model svm --svm-loss hinge --optimizer sgd --lr 0.05 --batch-size 256 --epochs 2
svm-squared-hinge|binary|--model svm --svm-loss squared-hinge --optimizer gd --lr 0.1 --epochs 6
softmax-adam|multiclass|--model softmax --optimizer adam --lr 0.01 --batch-size 512 --epochs 2
mlp-multiclass|multiclass|--model mlp --hidden 64,32 --dropout 0.1 --optimizer momentum --lr 0.05 --batch-size 256 --epochs 2
mlp-regression|regression|--model mlp --hidden 32 --optimizer adam --lr 0.003 --batch-size 256 --epochs 2'

# parity_pair NAME TASK OPTIONS: train and evaluate with numba and the GPU backend, compare.
parity_pair() {
    local name=$1 task=$2 options=$3 backend dir=$WORK/parity/$1
    local data=$WORK/data/$task
    mkdir -p "$dir"
    for backend in numba "$GPU_BACKEND"; do
        # shellcheck disable=SC2086  # the options are words
        mpirun -n 2 "$PY" -m mpigd train --data "$data/train" --test-data "$data/test" \
            --seed 4 --progress quiet --overwrite --out "$dir/$backend" $options \
            --backend "$backend" >"$dir/$backend-train.log" 2>&1 ||
            { echo "$name: $backend training failed"; tail -5 "$dir/$backend-train.log"; return 1; }
        mpirun -n 2 "$PY" -m mpigd eval "$dir/$backend" --data "$data/test" \
            --backend "$backend" >"$dir/$backend-eval.json" 2>"$dir/$backend-eval.log" ||
            { echo "$name: $backend eval failed"; tail -5 "$dir/$backend-eval.log"; return 1; }
    done
    "$PY" experiments/gpu_verify.py --out "$OUT/parity-$name.json" compare \
        "$dir/numba" "$dir/$GPU_BACKEND" --eval "$dir/numba-eval.json" \
        "$dir/$GPU_BACKEND-eval.json"
    cp "$dir/$GPU_BACKEND/run.json" "$OUT/parity-$name-run.json" 2>/dev/null || true
}

parity() {
    local task name options classes pids=() names=() failed=0 i
    for task in regression binary multiclass; do
        classes=()
        [[ $task == multiclass ]] && classes=(--classes 5)
        "$PY" -m mpigd data synth --task "$task" --rows 24000 --features 30 "${classes[@]}" \
            --shards 2 --seed 3 --out "$WORK/data/$task" >/dev/null || return 1
    done
    while IFS='|' read -r name task options; do
        while (($(jobs -rp | wc -l) >= JOBS)); do sleep 0.2; done
        # </dev/null: mpirun would read the rest of PARITY_RUNS from this loop's stdin.
        parity_pair "$name" "$task" "$options" </dev/null >"$WORK/parity-$name.out" 2>&1 &
        pids+=($!)
        names+=("$name")
    done <<<"$PARITY_RUNS"
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed=1
        cat "$WORK/parity-${names[$i]}.out"
    done
    return $failed
}

export -f use_libmpi gpu_only parity_pair
export OUT WORK VENV PY GPU_BACKEND DRY_RUN JOBS WHEELS PYTHON PARITY_RUNS

# Limits: 470 s in all, under the 8 minutes the machine gives (a normal run takes far less).
export PATH=$VENV/bin:$PATH
export LD_LIBRARY_PATH=$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
step setup 45 setup
use_libmpi
step versions 20 versions
step kernels 45 kernels
step gpu-tests 140 gpu_tests
step gpu-paths 60 gpu_paths
step bench 50 bench
step parity 110 parity
printf 'total %d s; scratch %s\n' $((SECONDS - START)) "$WORK" | tee -a "$SUMMARY"
exit $FAILED
