"""Models by name. Each model owns a flat parameter layout and calls the kernels.

=========  ==================  ====================  ==========================
``--model``  class              tasks                 layout of the flat vector
=========  ==================  ====================  ==========================
linreg     LinReg              regression            w (d), b
logreg     LogReg              binary                w (d), b
softmax    Softmax             binary, multiclass    W (C, d), b (C)
svm        LinearSVM           binary                w (d), b
mlp        MLP                 all three             W0 (h1, d), b0, ..., WL, bL
=========  ==================  ====================  ==========================
"""

from __future__ import annotations

import kernels
from mpigd.errors import ConfigError
from mpigd.models.base import Model
from mpigd.models.linear import LinearSVM, LinReg, LogReg
from mpigd.models.mlp import MLP
from mpigd.models.softmax import Softmax

MODELS: dict[str, type[Model]] = {
    cls.name: cls for cls in (LinReg, LogReg, Softmax, LinearSVM, MLP)
}
#: The tree ensembles: grown from histograms, not optimised (:mod:`mpigd.trees`; the
#: ``tree-ensemble`` layout builds them), so :func:`create_model` does not make them.
TREE_MODELS = ("forest", "gbt")


def load_backend(name: str):
    """The kernel backend ``--backend name``; ConfigError when it cannot be used here."""
    try:
        return kernels.get_backend(name)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"--backend {name}: {exc}") from exc


def create_model(
    name: str,
    backend,
    n_features: int,
    task: str,
    n_classes: int | None,
    svm_loss="hinge",
    hidden=(128,),
    dropout=0.0,
    dropout_seed=(0,),
) -> Model:
    """Build the model ``name`` for a dataset of ``task`` with ``n_features`` columns.

    ``svm_loss`` applies to svm; ``hidden``, ``dropout`` and ``dropout_seed`` (this rank's
    generator seed) to mlp. Raises ConfigError when the model cannot fit that task (e.g.
    logreg on regression).
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[name]
    if task not in cls.tasks:
        raise ConfigError(
            f"model {name!r} needs a {' or '.join(cls.tasks)} dataset, but the data is {task}"
        )
    if cls is LinearSVM:
        return LinearSVM(backend, n_features, n_classes, svm_loss=svm_loss)
    if cls is MLP:
        return MLP(backend, n_features, n_classes, hidden, dropout, dropout_seed)
    return cls(backend, n_features, n_classes)


__all__ = ["MODELS", "TREE_MODELS", "Model", "create_model", "load_backend"]
