"""``mpigd eval`` refuses, with one clear message (exit 2), a model.h5 that does not fit
its own recorded model, and says why a run directory has no model.h5."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import REPO, make_problem, run_mpigd, write_h5

from mpigd.config import TrainConfig
from mpigd.record import RunRecord
from mpigd.run import train

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, y = make_problem("binary", n_rows=200, d=4)
    return str(write_h5(tmp_path_factory.mktemp("data") / "train.h5", X, y, "binary", 2))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A logreg and an mlp run directory, each from a real short training run."""
    root = tmp_path_factory.mktemp("runs")
    for model, extra in (("logreg", {}), ("mlp", {"hidden": [3]})):
        train(TrainConfig(data=data, out=str(root / model), model=model, optimizer="gd",
                          epochs=1, progress="quiet", **extra))  # fmt: skip
    return root


def altered(trained, tmp_path, trained_model="logreg", params=None, without=(), **info_changes):
    """A run directory holding the ``trained_model``'s model.h5, with ``params`` (a
    function of the saved ones) and model attributes changed, those in ``without``
    left out."""
    with h5py.File(trained / trained_model / "model.h5", "r") as handle:
        saved, info = handle["params"][()], json.loads(handle.attrs["model"])
    out = tmp_path / "run"
    out.mkdir()
    record = {key: value for key, value in {**info, **info_changes}.items() if key not in without}
    with h5py.File(out / "model.h5", "w") as handle:
        handle.create_dataset("params", data=params(saved) if params else saved)
        handle.attrs["model"] = json.dumps(record)
    return out, info


def evaluate(out, data, n_ranks=1):
    if n_ranks == 1:
        return subprocess.run([sys.executable, "-m", "mpigd", "eval", str(out), "--data", data],
                              capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    return run_mpigd(n_ranks, "eval", str(out), "--data", data, timeout=60)


def refused(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("mpigd: error") == 1
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("n_ranks", [1, 2])
def test_a_params_vector_shorter_than_its_model_is_refused(trained, data, tmp_path, n_ranks):
    out, info = altered(trained, tmp_path, params=lambda p: p[:-1])
    n = info["n_params"]
    refused(evaluate(out, data, n_ranks), f"{out}/model.h5 holds {n - 1} parameters",
            f"the model 'logreg' (4 features, 2 classes) it records has {n}")  # fmt: skip


def test_a_recorded_n_params_that_disagrees_with_the_model_is_refused(trained, data, tmp_path):
    with h5py.File(trained / "logreg" / "model.h5", "r") as handle:
        n = len(handle["params"])
    out, _ = altered(trained, tmp_path, n_params=n + 1)
    refused(evaluate(out, data), f"holds {n} parameters, and its n_params says {n + 1}")


def test_an_mlp_whose_recorded_layers_need_another_size_is_refused(trained, data, tmp_path):
    out, info = altered(trained, tmp_path, trained_model="mlp", hidden=[5])
    refused(evaluate(out, data), f"holds {info['n_params']} parameters",
            "model 'mlp' (4 features, 2 classes, hidden [5])")  # fmt: skip


@pytest.mark.parametrize(
    "model, change, words",
    [("logreg", {"n_features": "5"}, "has n_features '5'; expected a whole number >= 1"),
     ("logreg", {"n_features": True}, "has n_features True; expected a whole number"),
     ("mlp", {"hidden": "abc"}, "has hidden 'abc'; expected a non-empty list of layer widths"),
     ("mlp", {"hidden": [3, 0]}, "has hidden [3, 0]; expected a non-empty list"),
     ("logreg", {"l2": "x"}, "has l2 'x'; expected a finite number >= 0"),
     ("logreg", {"l2": -1.0}, "has l2 -1.0; expected a finite number >= 0"),
     ("logreg", {"l2": float("inf")}, "has l2 inf; expected a finite number >= 0"),
     ("logreg", {"l2": 10**400}, "; expected a finite number >= 0"),
     ("logreg", {"class_weights": [1]}, "has class_weights [1]; expected null or 2 positive "
                                        "numbers, one per class"),
     ("logreg", {"class_weights": [1, "x"]}, "expected null or 2 positive numbers"),
     ("logreg", {"n_classes": 3}, "has n_classes 3; expected 2 for a binary model"),
     ("logreg", {"task": "regression"}, "has task 'regression'; expected one of binary (the "
                                        "tasks of model 'logreg')"),
     ("logreg", {"model": ["logreg"]}, "has model ['logreg']; expected one of linreg, logreg"),
     ("logreg", {"n_params": "9"}, "has n_params '9'; expected a whole number >= 1")],
    ids=["n_features-str", "n_features-bool", "hidden-str", "hidden-zero", "l2-str",
         "l2-negative", "l2-inf", "l2-huge", "class_weights-short", "class_weights-str",
         "n_classes", "task", "model-list", "n_params-str"],
)  # fmt: skip
def test_a_model_record_field_of_the_wrong_type_or_range_is_refused(
    trained, data, tmp_path, model, change, words
):
    out, _ = altered(trained, tmp_path, trained_model=model, **change)
    refused(evaluate(out, data), f"{out}/model.h5: its model attribute ", words)


def test_a_wrong_model_record_is_refused_on_every_rank(trained, data, tmp_path):
    out, _ = altered(trained, tmp_path, class_weights=[1])
    refused(evaluate(out, data, n_ranks=2), "has class_weights [1]")


def test_a_model_record_without_its_l2_is_refused(trained, data, tmp_path):
    out, _ = altered(trained, tmp_path, without=("l2",))
    refused(evaluate(out, data), f"{out}/model.h5: its model attribute lacks l2")


@pytest.mark.parametrize(
    "change, words",
    [(lambda p: p.reshape(1, -1), "params is a 2-D float64 array, not the 1-D float vector"),
     (lambda p: p.astype(np.int64), "params is a 1-D int64 array"),
     (lambda p: np.where(np.arange(len(p)) == 0, np.nan, p), "1 of the"),
     (lambda p: np.full_like(p, np.inf), "are not finite")],
    ids=["2-D", "int", "nan", "inf"],
)  # fmt: skip
def test_params_that_are_not_a_finite_float_vector_are_refused(trained, data, tmp_path, change,
                                                               words):  # fmt: skip
    out, _ = altered(trained, tmp_path, params=change)
    refused(evaluate(out, data), f"{out}/model.h5", words)


def test_non_finite_params_are_refused_on_two_ranks(trained, data, tmp_path):
    out, _ = altered(trained, tmp_path, params=lambda p: p * np.nan)
    refused(evaluate(out, data, n_ranks=2), "are not finite")


def test_the_unaltered_model_still_evaluates(trained, data):
    for model in ("logreg", "mlp"):
        result = evaluate(trained / model, data)
        assert result.returncode == 0, result.stderr


def test_eval_of_a_run_that_failed_says_so(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    run = {"config": {}, "status": "failed", "stop_reason": "training diverged at epoch 3"}
    (out / "run.json").write_text(json.dumps(run))
    refused(evaluate(out, data), "model.h5 not found: the run failed: training diverged at epoch 3")


def test_eval_of_a_run_still_going_says_so(data, tmp_path):
    out = tmp_path / "run"
    holder = RunRecord(str(out))
    holder.claim({}, resume=False, overwrite=False, inputs=[data])
    try:
        refused(evaluate(out, data), "the run is still starting (last heartbeat",
                "evaluate it once it has completed")  # fmt: skip
    finally:
        holder.release()
