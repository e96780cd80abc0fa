"""Model quality on a dataset, summed over the ranks: test metrics and ``mpigd eval``.

Reported per dataset: ``loss``, the mean per-row loss (no L2 term, unweighted);
``accuracy`` for classification; ``mse``, ``rmse`` and ``r2`` for regression.
"""

from __future__ import annotations

import sys

import numpy as np

from kernels import DEFAULT_BACKEND
from mpigd.comm import RankInfo, collectively, sum_across

# Layout of the packed local sums: loss, correct predictions, rows, Σy.
_LOSS, _CORRECT, _ROWS, _Y_SUM = range(4)


def local_sums(model, X, y, params: np.ndarray, sample_weight=None) -> np.ndarray:
    """This rank's (4,) float64 sums: (weighted) loss, correct predictions, rows, Σy."""
    sums = np.zeros(4)
    if X.shape[0] == 0:
        return sums
    scratch = np.empty_like(params)
    targets = model.targets(y)
    sums[_LOSS] = model.loss_grad(X, targets, sample_weight, params, scratch, train=False)
    sums[_ROWS] = X.shape[0]
    if model.n_classes is None:
        sums[_Y_SUM] = float(np.sum(y))
    else:
        sums[_CORRECT] = model.count_correct(X, y, params)
    return sums


def evaluate(model, X, y, params, ranks: RankInfo) -> dict:
    """Collective: metrics of ``params`` over all ranks' rows (X, y: this rank's part).

    For regression, R² needs the variance of y about its global mean: a second, tiny
    Allreduce of Σ(y − ȳ)² avoids the cancellation of E[y²] − E[y]² for large offsets.
    """
    sums = sum_across(ranks.comm, local_sums(model, X, y, params))
    rows = sums[_ROWS]
    metrics = {"rows": int(rows), "loss": float(sums[_LOSS] / rows)}
    if model.n_classes is not None:
        metrics["accuracy"] = float(sums[_CORRECT] / rows)
        return metrics
    mean = sums[_Y_SUM] / rows
    spread = sum_across(ranks.comm, np.array([float(np.sum((y - mean) ** 2))]))[0]
    mse = 2.0 * metrics["loss"]
    metrics.update(mse=mse, rmse=float(np.sqrt(mse)))
    metrics["r2"] = float(1.0 - mse * rows / spread) if spread > 0 else None
    return metrics


def evaluate_run(
    run_dir: str, data_path: str, backend_name: str = DEFAULT_BACKEND, ranks: RankInfo | None = None
) -> dict:
    """Collective: metrics of the model saved in ``run_dir`` on the dataset ``data_path``.

    Works on any number of ranks (each evaluates its own rows). Returns, on every rank,
    the metrics plus the model name and the ``objective``: the training objective on
    this data (class-weighted mean loss as in training, plus the L2 term).
    """
    from mpigd.comm import world
    from mpigd.objective import l2_term
    from mpigd.run.loading import load_local_rows

    ranks = ranks or world()
    params, info, model = collectively(ranks.comm, lambda: _load_model(run_dir, backend_name))
    _place_on_devices(ranks, backend_name)
    data_info, rows = load_local_rows(data_path, ranks, every_rank_needs_rows=False,
                                      what="--data")  # fmt: skip
    collectively(ranks.comm, lambda: _check_data(data_info, info, data_path, run_dir))
    metrics = evaluate(model, rows.X, rows.y, params, ranks)
    weights = info.get("class_weights")
    if weights is not None:
        row_weights = np.asarray(weights)[rows.y] if len(rows.y) else None
        weighted = sum_across(ranks.comm, local_sums(model, rows.X, rows.y, params, row_weights))
        data_loss = weighted[_LOSS] / weighted[_ROWS]
    else:
        data_loss = metrics["loss"]
    metrics["objective"] = data_loss + l2_term(params * model.reg_mask, info["l2"])
    return {"model": info["model"], "data": data_path, **metrics}


def _place_on_devices(ranks: RankInfo, backend_name: str) -> dict | None:
    """Collective: put each rank on its GPU for a device backend, as training does.

    Without it every rank of ``mpigd eval --backend cupy`` used GPU 0. Called after
    :func:`_load_model` (which loads the backend, so it cannot fail here, and allocates
    nothing on a device) and before any row reaches a device. None for CPU backends.
    """
    from mpigd import device
    from mpigd.models import load_backend

    return device.place(ranks.comm, load_backend(backend_name))


def _load_model(run_dir: str, backend_name: str):
    """(params, model info, model) from RUN_DIR/model.h5; MpigdError if unusable.

    A run directory without model.h5 is explained by its run's status (still running,
    died, failed, ...); a model.h5 whose parameters do not fit its own model is refused.
    """
    from mpigd.models import TREE_MODELS, create_model, load_backend
    from mpigd.record import load_model
    from mpigd.trees.ensemble import TreeEnsemble

    _explain_a_missing_model(run_dir)
    params, info, arrays = load_model(run_dir)
    _check_model_info(info, run_dir)
    backend = load_backend(backend_name)
    if info["model"] in TREE_MODELS:
        model = TreeEnsemble.from_model_file(info, arrays, f"{run_dir}/model.h5")
    else:
        model = create_model(info["model"], backend, info["n_features"], info["task"],
                             info["n_classes"], svm_loss=info.get("svm_loss", "hinge"),
                             hidden=info.get("hidden", [128]))  # fmt: skip
    _check_params(params, info, model, run_dir)
    return params, info, model


def _explain_a_missing_model(run_dir: str) -> None:
    """DataError saying why RUN_DIR has no model.h5, when its run.json tells (the run
    is still running, died, failed, was preempted or aborted); else nothing."""
    import json
    import os
    from pathlib import Path

    from mpigd.errors import DataError
    from mpigd.record import MODEL_FILE, RUN_FILE
    from mpigd.record.run_dir import run_status

    path = Path(run_dir) / MODEL_FILE
    if os.path.lexists(path):
        return
    try:
        run = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(run, dict) or run.get("status") in (None, "completed"):
        return
    run = run_status(run_dir, run)
    status, reason = run.get("status"), run.get("stop_reason") or "no reason recorded"
    resume = (" (train --resume continues it from its checkpoint)"
              if (Path(run_dir) / "checkpoint.h5").exists() else "")  # fmt: skip
    if status == "died":
        beat = run.get("last_heartbeat")
        why = f"the run died at {beat} (its last heartbeat)" if beat else "the run died"
        why += f"; it {reason}"
        why += resume
    elif status in ("starting", "running"):
        beat = run.get("last_heartbeat")
        why = f"the run is still {status}" + (f" (last heartbeat {beat})" if beat else "")
        why += "; evaluate it once it has completed"
    elif status in ("preempted", "interrupted"):
        why = f"the run was {status}: {reason}{resume}"
    else:
        why = f"the run {status}: {reason}"
    raise DataError(f"{path} not found: {why}")


def _check_model_info(info, run_dir: str) -> None:
    """DataError unless model.h5's ``model`` attribute describes a model ``eval`` can
    rebuild: every field it reads present (``svm_loss``, ``hidden``, ``class_weights``
    and ``n_params`` may be missing: older files lack some) and of the type, range and
    length that field needs.

    All of the record's fields are checked here, once, so that a damaged or hand-edited
    file is one message naming the field, never a traceback from deep in the model.
    """
    from mpigd.errors import DataError
    from mpigd.models import MODELS, TREE_MODELS
    from mpigd.trees.ensemble import TREE_TASKS

    path = f"{run_dir}/model.h5"
    needed = ("model", "n_features", "task", "n_classes", "l2")
    missing = [key for key in needed if not isinstance(info, dict) or key not in info]
    if missing:
        raise DataError(
            f"{path}: its model attribute lacks {', '.join(missing)}; it is not "
            "a model file mpigd train wrote"
        )

    def refuse(key: str, expected: str):
        raise DataError(f"{path}: its model attribute has {key} {info[key]!r}; expected {expected}")

    name, task, n_classes = info["model"], info["task"], info["n_classes"]
    if not (isinstance(name, str) and (name in MODELS or name in TREE_MODELS)):
        refuse("model", f"one of {', '.join((*MODELS, *TREE_MODELS))}")
    tasks = MODELS[name].tasks if name in MODELS else TREE_TASKS
    if not (isinstance(task, str) and task in tasks):
        refuse("task", f"one of {', '.join(tasks)} (the tasks of model {name!r})")
    if not _is_count(info["n_features"]):
        refuse("n_features", "a whole number >= 1")
    if task == "regression" and n_classes is not None:
        refuse("n_classes", "null for a regression model")
    if task == "binary" and (not _is_count(n_classes) or n_classes != 2):
        refuse("n_classes", "2 for a binary model")
    if task == "multiclass" and (not _is_count(n_classes) or n_classes < 2):
        refuse("n_classes", "a whole number >= 2 for a multiclass model")
    if not (_is_number(info["l2"]) and info["l2"] >= 0):
        refuse("l2", "a finite number >= 0")
    if name == "svm" and info.get("svm_loss", "hinge") not in ("hinge", "squared-hinge"):
        refuse("svm_loss", "hinge or squared-hinge")
    hidden = info.get("hidden", [128])
    if name == "mlp" and not (isinstance(hidden, list) and hidden and all(map(_is_count, hidden))):
        refuse("hidden", "a non-empty list of layer widths >= 1")
    weights = info.get("class_weights")
    if weights is not None and n_classes is None:
        refuse("class_weights", "null for a regression model")
    if weights is not None and not (
        isinstance(weights, list) and len(weights) == n_classes
        and all(_is_number(weight) and weight > 0 for weight in weights)
    ):  # fmt: skip
        refuse("class_weights", f"null or {n_classes} positive numbers, one per class")
    if name in TREE_MODELS:  # no flat parameters: the trees are model.h5's group model
        if info.get("n_params") not in (None, 0):
            refuse("n_params", "0 for a tree ensemble")
    elif info.get("n_params") is not None and not _is_count(info["n_params"]):
        refuse("n_params", "a whole number >= 1")


def _is_count(value) -> bool:
    """Whether a JSON value is a whole number >= 1 (``true`` is not, to a user)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_number(value) -> bool:
    """Whether a JSON value is a number a float64 holds: not NaN, infinite or an integer
    too large for one (``true`` is not a number, to a user)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max


def _check_params(params, info: dict, model, run_dir: str) -> None:
    """DataError unless ``params`` is the 1-D, finite float vector of ``model``'s size
    that model.h5's own ``n_params`` records."""
    from mpigd.errors import DataError

    path = f"{run_dir}/model.h5"
    which = f"model {info['model']!r} ({info['n_features']} features, {info['n_classes']} classes"
    which += f", hidden {info.get('hidden', [128])})" if info["model"] == "mlp" else ")"
    array = np.asarray(params)
    if array.ndim != 1 or array.dtype.kind != "f":
        raise DataError(
            f"{path}: params is a {array.ndim}-D {array.dtype} array, not the 1-D float "
            f"vector of the {which}"
        )
    recorded, needed = info.get("n_params"), model.full_size
    if len(array) != needed or (recorded is not None and recorded != needed):
        said = f", and its n_params says {recorded}" if recorded is not None else ""
        raise DataError(
            f"{path} holds {len(array)} parameters{said}, but the {which} it records has "
            f"{needed}: the file is damaged or not this model's"
        )
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(f"{path}: {bad} of the {len(array)} parameters of the {which} are "
                        "not finite (NaN or infinity)")  # fmt: skip


def _check_data(data_info, info: dict, data_path: str, run_dir: str) -> None:
    from mpigd.errors import DataError

    if (data_info.n_features, data_info.n_classes) != (info["n_features"], info["n_classes"]):
        raise DataError(
            f"{data_path} has {data_info.n_features} features and {data_info.n_classes} "
            f"classes, but the model in {run_dir} was trained on {info['n_features']} "
            f"features and {info['n_classes']} classes"
        )
