"""Model quality on a dataset, summed over the ranks: test metrics and ``mpigd eval``.

Reported per dataset: ``loss``, the mean per-row loss (no L2 term, unweighted);
``accuracy`` for classification; ``mse``, ``rmse`` and ``r2`` for regression.
"""

from __future__ import annotations

import numpy as np

from mpigd.comm import RankInfo, sum_across

# Layout of the packed local sums: loss, correct predictions, rows, Σy, Σy².
_LOSS, _CORRECT, _ROWS, _Y_SUM, _Y_SQUARES = range(5)


def local_sums(model, X, y, params: np.ndarray) -> np.ndarray:
    """This rank's (5,) float64 sums: loss, correct predictions, rows, Σy, Σy² (y = labels)."""
    sums = np.zeros(5)
    if len(X) == 0:
        return sums
    scratch = np.empty_like(params)
    targets = model.targets(y)
    sums[_LOSS] = model.loss_grad(X, targets, None, params, scratch)
    sums[_ROWS] = len(X)
    if model.n_classes is None:
        sums[_Y_SUM] = float(np.sum(y))
        sums[_Y_SQUARES] = float(y @ y)
    else:
        sums[_CORRECT] = model.count_correct(X, y, params)
    return sums


def metrics_from_sums(sums: np.ndarray, classification: bool) -> dict:
    """Turn global sums from :func:`local_sums` into the metrics named in the module doc."""
    rows = sums[_ROWS]
    metrics = {"rows": int(rows), "loss": float(sums[_LOSS] / rows)}
    if classification:
        metrics["accuracy"] = float(sums[_CORRECT] / rows)
        return metrics
    mse = 2.0 * metrics["loss"]
    variance = sums[_Y_SQUARES] / rows - (sums[_Y_SUM] / rows) ** 2
    metrics.update(mse=mse, rmse=float(np.sqrt(mse)))
    metrics["r2"] = float(1.0 - mse / variance) if variance > 0 else None
    return metrics


def evaluate(model, X, y, params, ranks: RankInfo) -> dict:
    """Collective: metrics of ``params`` over all ranks' rows (X, y: this rank's part)."""
    sums = sum_across(ranks.comm, local_sums(model, X, y, params))
    return metrics_from_sums(sums, classification=model.n_classes is not None)


def evaluate_run(
    run_dir: str, data_path: str, backend_name: str = "numpy", ranks: RankInfo | None = None
) -> dict:
    """Collective: metrics of the model saved in ``run_dir`` on the dataset ``data_path``.

    Works on any number of ranks (each evaluates its own rows). Returns, on every rank,
    the metrics plus the model name and the L2-regularised ``objective``.
    """
    import kernels
    from mpigd.comm import world
    from mpigd.errors import DataError
    from mpigd.loading import load_local_rows
    from mpigd.models import create_model
    from mpigd.record import load_model

    ranks = ranks or world()
    params, info = load_model(run_dir)
    data_info, rows = load_local_rows(data_path, ranks, every_rank_needs_rows=False)
    if (data_info.n_features, data_info.n_classes) != (info["n_features"], info["n_classes"]):
        raise DataError(
            f"{data_path} has {data_info.n_features} features and {data_info.n_classes} "
            f"classes, but the model in {run_dir} was trained on {info['n_features']} "
            f"features and {info['n_classes']} classes"
        )
    model = create_model(
        info["model"],
        kernels.get_backend(backend_name),
        info["n_features"],
        info["task"],
        info["n_classes"],
        info.get("svm_loss", "hinge"),
    )
    metrics = evaluate(model, rows.X, rows.y, params, ranks)
    weights = params * model.reg_mask
    metrics["objective"] = metrics["loss"] + 0.5 * info["l2"] * float(weights @ weights)
    return {"model": info["model"], "data": data_path, **metrics}
