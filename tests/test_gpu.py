"""The ``cupy`` backend (:mod:`kernels.gpu`) against numpy: every kernel, every model, a
2-rank training run; and the CPU side of GPU support (:mod:`mpigd.device`, the errors).

Tests parametrised over ``BACKENDS`` compare ``numba`` and ``cupy`` with the ``numpy``
(reference) backend through the same code. A test that needs a GPU calls
:func:`require_gpu`: without CuPy or a CUDA device it is SKIPPED with the reason, but with
``MPIGD_TEST_GPU=1`` set (on a GPU node: ``MPIGD_TEST_GPU=1 make test``) it FAILS, so a
GPU run can never pass by skipping (as Horovod's ``skip_or_fail_gpu_test``).
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from helpers import make_problem, run_mpigd, write_h5

import kernels
from kernels import dense, reference
from mpigd import device
from mpigd.models import create_model
from mpigd.objective import LocalObjective
from mpigd.timing import PhaseTimer

BACKENDS = ("numba", "cupy")
DTYPES = (np.float64, np.float32)
LOSSES = reference.LINEAR_LOSSES


def gpu_expected() -> bool:
    """True when the run says a GPU must be there (``MPIGD_TEST_GPU`` set, not 0)."""
    return os.environ.get("MPIGD_TEST_GPU", "") not in ("", "0")


def require_gpu() -> None:
    """Skip the calling test without CuPy or a GPU, or fail it when one is expected."""
    reason = kernels.gpu_unavailable_reason()
    if reason is None:
        return
    message = f"needs CuPy and a CUDA device: {reason}"
    if gpu_expected():
        pytest.fail(f"MPIGD_TEST_GPU is set but the GPU test cannot run: {message}")
    pytest.skip(message)


def backend_named(name: str):
    """The backend module ``name``; for ``cupy``, only once :func:`require_gpu` passed."""
    if name == "cupy":
        require_gpu()
    return kernels.get_backend(name)


def on_host(array) -> np.ndarray:
    """A backend array (numpy or cupy) as numpy."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else array


def assert_close(actual, expected, rtol=1e-12):
    """Equal up to ``rtol`` relative to the largest entry (entries may cancel to ~0)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(on_host(actual), expected, rtol=rtol, atol=rtol * scale)


def rows_for(selection: str, n: int):
    """``rows=`` arguments: all rows, a shuffled subset with repeats, or none."""
    if selection == "all":
        return None
    if selection == "empty":
        return np.zeros(0, dtype=np.int64)
    rows = np.random.default_rng(5).integers(0, n, 2 * n // 3)
    rows[:4] = rows[0]
    return rows


# -- the CPU side: runs everywhere ----------------------------------------------------------


def test_require_gpu_fails_instead_of_skipping_when_a_gpu_is_expected(monkeypatch):
    monkeypatch.setattr(kernels, "gpu_unavailable_reason", lambda: "no CUDA device is available")
    monkeypatch.setenv("MPIGD_TEST_GPU", "1")
    with pytest.raises(pytest.fail.Exception, match="MPIGD_TEST_GPU"):
        require_gpu()
    monkeypatch.setenv("MPIGD_TEST_GPU", "0")
    with pytest.raises(pytest.skip.Exception, match="no CUDA device"):
        require_gpu()


def test_an_unusable_cupy_backend_is_a_clear_error():
    reason = kernels.gpu_unavailable_reason()
    if reason is None:
        assert kernels.get_backend("cupy").name == "cupy"
        return
    assert "CuPy is not installed" in reason or "no CUDA device is available" in reason
    with pytest.raises(ValueError, match="CuPy is not installed|no CUDA device is available"):
        kernels.get_backend("cupy")


# The choice of device (fake device counts and environments): tests/test_device.py.


def test_cuda_awareness_is_detected_conservatively():
    aware, how = device.cuda_aware()
    assert isinstance(aware, bool) and how
    assert device.cuda_aware({"MPIR_CVAR_ENABLE_GPU": "0"}) == (False, "MPIR_CVAR_ENABLE_GPU=0")


def test_cpu_backends_are_not_placed_and_move_nothing():
    from mpi4py import MPI

    for name in ("numba", "numpy"):
        backend = kernels.get_backend(name)
        assert device.place(MPI.COMM_WORLD, backend) is None
        X = np.ones((3, 2))
        assert backend.to_device(X) is X and backend.to_host(X) is X
        out = np.zeros(6)
        assert backend.to_host(X.ravel(), out=out) is out and out.sum() == 6


# -- every kernel against the reference -----------------------------------------------------


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("selection", ["all", "subset", "empty"])
@pytest.mark.parametrize("d", [7, 300])  # 300: the GPU kernel's shared-memory columns too
def test_linear_kernel_matches_reference(backend_name, loss, dtype, weighted, selection, d):
    backend = backend_named(backend_name)
    rng = np.random.default_rng(0)
    n = 1500
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n) if loss == "squared" else (rng.random(n) < 0.5).astype(float)
    weights = rng.uniform(0.5, 2.0, n) if weighted else None
    params = 0.2 * rng.standard_normal(d + 1)
    rows = rows_for(selection, n)
    expected_grad = np.empty(d + 1)
    expected = reference.linear_loss_grad(loss, X, y, weights, params, expected_grad, rows=rows)
    grad = np.full(d + 1, np.nan)
    to_device = backend.to_device
    got = backend.linear_loss_grad(loss, to_device(X), to_device(y), to_device(weights),
                                   params, grad, rows=rows)  # fmt: skip
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert_close(grad, expected_grad)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_linear_wide_row_path_matches_reference(monkeypatch, loss, dtype):
    """Rows too wide for the single-pass kernel: cuBLAS + linear_rows, in several chunks."""
    gpu = backend_named("cupy")
    monkeypatch.setattr(gpu, "_SHARED_BYTES", 8)  # no warp fits: the two-GEMM path
    monkeypatch.setattr(gpu, "_CHUNK_BYTES", 8 * 9 * 100)  # 100-row chunks
    rng = np.random.default_rng(1)
    X = rng.standard_normal((333, 9)).astype(dtype)
    y = rng.standard_normal(333) if loss == "squared" else (rng.random(333) < 0.5).astype(float)
    weights, params = rng.uniform(0.5, 2.0, 333), 0.3 * rng.standard_normal(10)
    for rows in (None, rows_for("subset", 333)):
        expected_grad, grad = np.empty(10), np.empty(10)
        expected = reference.linear_loss_grad(loss, X, y, weights, params, expected_grad, rows)
        got = gpu.linear_loss_grad(loss, gpu.to_device(X), gpu.to_device(y),
                                   gpu.to_device(weights), params, grad, rows=rows)  # fmt: skip
        assert got == pytest.approx(expected, rel=1e-12)
        assert_close(grad, expected_grad)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("selection", ["all", "subset", "empty"])
@pytest.mark.parametrize("chunk_rows", [None, 64])  # 64: several GEMM chunks on the GPU
def test_softmax_kernel_matches_reference(
    monkeypatch, backend_name, dtype, weighted, selection, chunk_rows
):
    backend = backend_named(backend_name)
    d, C, n = 11, 5, 700
    if chunk_rows and backend_name == "cupy":
        monkeypatch.setattr(backend, "_CHUNK_BYTES", 8 * d * chunk_rows)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, C, n)
    weights = rng.uniform(0.5, 2.0, n) if weighted else None
    params = 0.5 * rng.standard_normal(C * (d + 1))
    rows = rows_for(selection, n)
    expected_grad = np.empty_like(params)
    expected = reference.softmax_loss_grad(X, y, weights, params, expected_grad, rows=rows)
    grad = np.full_like(params, np.nan)
    to_device = backend.to_device
    got = backend.softmax_loss_grad(to_device(X), to_device(y), to_device(weights), params,
                                    grad, rows=rows)  # fmt: skip
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert_close(grad, expected_grad)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decisions_are_host_arrays_matching_reference(backend_name, dtype):
    backend = backend_named(backend_name)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((257, 6)).astype(dtype)
    linear, softmax = rng.standard_normal(7), rng.standard_normal(3 * 7)
    z = backend.linear_decision(backend.to_device(X), linear)
    Z = backend.softmax_decision(backend.to_device(X), softmax)
    assert isinstance(z, np.ndarray) and isinstance(Z, np.ndarray)
    assert_close(z, reference.linear_decision(X, linear))
    assert_close(Z, reference.softmax_decision(X, softmax))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bad_rows_and_labels_raise(backend_name):
    backend = backend_named(backend_name)
    rng = np.random.default_rng(4)
    X = backend.to_device(rng.standard_normal((20, 3)))
    y = backend.to_device(rng.integers(0, 2, 20).astype(float))
    params, grad = np.zeros(4), np.empty(4)
    with pytest.raises(IndexError):
        backend.linear_loss_grad("logistic", X, y, None, params, grad, rows=np.array([20]))
    labels = backend.to_device(np.full(20, 3))
    softmax_params = np.zeros(3 * 4)
    with pytest.raises(ValueError, match="class ids"):
        backend.softmax_loss_grad(X, labels, None, softmax_params, np.empty(12))


def test_gpu_transfers_round_trip():
    gpu = backend_named("cupy")
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    on_device = gpu.to_device(values)
    assert isinstance(on_device, gpu.xp.ndarray) and gpu.to_device(None) is None
    np.testing.assert_array_equal(gpu.to_host(on_device), values)
    out = np.full(12, np.nan)
    assert gpu.to_host(on_device.ravel(), out=out) is out
    np.testing.assert_array_equal(out, values.ravel())


# -- the MLP layer kernels against kernels.dense ---------------------------------------------


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_dense_kernels_match_numpy(backend_name, dtype, masked, weighted):
    backend = backend_named(backend_name)
    xp, to_device = backend.xp, backend.to_device
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    rng = np.random.default_rng(6)
    n, i, o = 37, 13, 9
    A = rng.standard_normal((n, i)).astype(dtype)
    W = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    mask = ((rng.random((n, o)) > 0.3) / 0.7).astype(dtype) if masked else None
    weights = rng.uniform(0.5, 2.0, n) if weighted else None
    labels = rng.integers(0, o, n)
    targets = rng.standard_normal(n)

    Z = dense.dense_forward(A, W, b, np.empty((n, o), dtype))
    Z_dev = backend.dense_forward(to_device(A), to_device(W), to_device(b), xp.empty((n, o), dtype))
    assert_close(Z_dev, Z, rtol)
    H = dense.relu_forward(Z, mask, np.empty_like(Z))
    H_dev = backend.relu_forward(Z_dev, to_device(mask), xp.empty_like(Z_dev))
    assert_close(H_dev, H, rtol)
    dH = rng.standard_normal((n, o)).astype(dtype)
    dZ = dense.relu_backward(dH.copy(), Z, mask, np.empty_like(Z))
    dH_dev = to_device(dH)
    dZ_dev = backend.relu_backward(dH_dev, Z_dev, to_device(mask), out=dH_dev)  # in place
    assert_close(dZ_dev, dZ, rtol)

    gW, gb, dA = np.empty_like(W), np.empty_like(b), np.empty_like(A)
    dense.dense_backward(dZ, A, W, gW, gb, dA)
    gW_dev, gb_dev = xp.empty((o, i), dtype), xp.empty(o, dtype)
    dA_dev = xp.empty((n, i), dtype)
    backend.dense_backward(dZ_dev, to_device(A), to_device(W), gW_dev, gb_dev, dA_dev)
    for got, expected in ((gW_dev, gW), (gb_dev, gb), (dA_dev, dA)):
        assert_close(got, expected, rtol)

    dZ_loss = np.empty_like(Z)
    loss = dense.softmax_xent(Z, labels, weights, dZ_loss)
    logits = to_device(Z)
    got = backend.softmax_xent(logits, to_device(labels), to_device(weights), logits)  # in place
    assert got == pytest.approx(loss, rel=rtol)
    assert_close(logits, dZ_loss, rtol)

    column = Z[:, :1].copy()
    d_column = np.empty_like(column)
    loss = dense.half_squared_error(column, targets, weights, d_column)
    d_column_dev = xp.empty_like(to_device(column))
    got = backend.half_squared_error(to_device(column), to_device(targets), to_device(weights),
                                     d_column_dev)  # fmt: skip
    assert got == pytest.approx(loss, rel=rtol)
    assert_close(d_column_dev, d_column, rtol)


@pytest.mark.parametrize("backend_name", ("numpy", *BACKENDS))
@pytest.mark.parametrize("bad", [[0, 20], [3, -1]], ids=["past-the-end", "negative"])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_mlp_rows_out_of_range_raise_on_every_backend(backend_name, bad, layout):
    """CuPy's ``X[rows]`` wraps an index out of range (numpy's takes a negative one from
    the end): the MLP checks the batch's rows before it gathers them."""
    import scipy.sparse

    backend = backend_named(backend_name)
    X, y = make_problem("multiclass", n_rows=20, d=4, n_classes=3, seed=1)
    model = create_model("mlp", backend, 4, "multiclass", 3, hidden=(5,))
    X_rows = backend.to_device(scipy.sparse.csr_matrix(X) if layout == "csr" else X)
    labels = backend.to_device(model.targets(y))
    params, grad = model.init_params(np.random.default_rng(2)), np.empty(model.n_params)
    for rows in (np.array(bad), backend.to_device(np.array(bad))):  # host or device rows
        with pytest.raises(IndexError, match="outside 0 .. n-1"):
            model.loss_grad(X_rows, labels, None, params, grad, rows=rows)
    good = model.loss_grad(X_rows, labels, None, params, grad, rows=np.array([0, 19, 19]))
    assert np.isfinite(good) and model.loss_grad(X_rows, labels, None, params, grad,
                                                 rows=np.zeros(0, np.int64)) == 0.0  # fmt: skip


# -- every model through LocalObjective ------------------------------------------------------

MODELS = [
    ("linreg", "regression", None, {}),
    ("logreg", "binary", 2, {}),
    ("softmax", "multiclass", 4, {}),
    ("svm", "binary", 2, {"svm_loss": "hinge"}),
    ("svm", "binary", 2, {"svm_loss": "squared-hinge"}),
    ("mlp", "multiclass", 4, {"hidden": (16, 8), "dropout": 0.2}),
    ("mlp", "regression", None, {"hidden": (12,)}),
]


def model_and_objective(backend, spec, X, y, weights):
    """A model of ``spec`` on ``backend`` and its LocalObjective, rows on the device."""
    name, task, n_classes, options = spec
    model = create_model(name, backend, X.shape[1], task, n_classes, dropout_seed=(3, 1),
                         **options)  # fmt: skip
    to_device = backend.to_device
    objective = LocalObjective(model, to_device(X), to_device(model.targets(y)),
                               to_device(weights), 1e-3, PhaseTimer())  # fmt: skip
    return model, objective


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("spec", MODELS, ids=lambda spec: f"{spec[0]}-{spec[1]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_models_match_the_reference_backend(backend_name, spec, dtype, weighted):
    backend = backend_named(backend_name)
    n_classes = spec[2]
    X, y = make_problem(spec[1], n_rows=403, d=6, n_classes=n_classes, seed=7, dtype=dtype)
    weights = np.random.default_rng(8).uniform(0.5, 2.0, len(y)) if weighted else None
    model, objective = model_and_objective(backend, spec, X, y, weights)
    ref_model, ref_objective = model_and_objective(reference, spec, X, y, weights)
    params = model.init_params(np.random.default_rng(9)) + 0.1
    rtol = 1e-11 if dtype == np.float64 else 2e-4
    for rows in (None, rows_for("subset", len(y))):
        packed, expected = objective.packed_buffer(), ref_objective.packed_buffer()
        objective.local_sums(params, rows, packed)
        ref_objective.local_sums(params, rows, expected)
        assert_close(packed[:-2], expected[:-2], rtol)  # the gradient sum
        assert packed[-2] == pytest.approx(expected[-2], rel=rtol)  # the loss sum
        assert packed[-1] == expected[-1]  # the row count
    X_eval = backend.to_device(X)
    predictions = model.predict(X_eval, params)
    assert isinstance(predictions, np.ndarray)
    if n_classes is None:
        assert_close(predictions, ref_model.predict(X, params), rtol)
    elif dtype == np.float64:
        np.testing.assert_array_equal(predictions, ref_model.predict(X, params))
        assert model.count_correct(X_eval, y, params) == ref_model.count_correct(X, y, params)


# -- a 2-rank training run -------------------------------------------------------------------

RUNS = {
    "logreg-gd": "--model logreg --optimizer gd --lr 0.5 --epochs 6",
    "softmax-sgd": "--model softmax --optimizer sgd --lr 0.2 --epochs 3 --batch-size 128",
    "mlp-momentum-dropout": "--model mlp --hidden 16 --dropout 0.1 --optimizer momentum "
    "--lr 0.05 --epochs 3 --batch-size 128",
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_two_rank_training_equals_the_numba_run(tmp_path, run):
    """``mpirun -n 2 ... --backend cupy`` ends at the numba run's parameters (float64)."""
    require_gpu()
    task, n_classes = ("binary", 2) if run.startswith("logreg") else ("multiclass", 3)
    X, y = make_problem(task, n_rows=1500, d=8, n_classes=n_classes, seed=11)
    train = write_h5(tmp_path / "train.h5", X[:1200], y[:1200], task, n_classes)
    test = write_h5(tmp_path / "test.h5", X[1200:], y[1200:], task, n_classes)
    finals = {}
    for backend in ("numba", "cupy"):
        out = tmp_path / backend
        result = run_mpigd(2, "train", "--data", str(train), "--test-data", str(test),
                           "--out", str(out), "--seed", "4", "--l2", "1e-3", *RUNS[run].split(),
                           "--backend", backend, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        with h5py.File(out / "model.h5") as handle:
            finals[backend] = handle["params"][()]
        record = json.loads((out / "run.json").read_text())
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        finals[backend + "-loss"] = [row["train_loss"] for row in metrics]
    np.testing.assert_allclose(finals["cupy"], finals["numba"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(finals["cupy-loss"], finals["numba-loss"], rtol=1e-10)
    gpu = record["gpu"]  # the cupy run's record
    assert record["versions"]["backend"] == "cupy" and record["versions"]["cupy"]
    assert isinstance(gpu["cuda_aware_mpi"], bool) and gpu["name"]
    assert gpu["communication"].startswith("host") and len(gpu["ranks"]) == 2
