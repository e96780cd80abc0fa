"""A tree ensemble as arrays: what model.h5 keeps of a forest or a boosted model, and its
predictions from raw features.

Layout (group ``model`` of model.h5 and of checkpoint.h5; every array one entry per
node, all trees' nodes concatenated, each tree's in the order the grower created them:
the root first, then level by level, :mod:`mpigd.trees.grower`):

===============  =========================  ============================================
name             dtype, shape               what
===============  =========================  ============================================
``feature``      int32 (nodes,)             the split's feature; -1 at a leaf
``threshold``    float64 (nodes,)           a row goes left iff ``x[feature] <=
                                            threshold`` (the split bin's upper edge)
``bin``          int32 (nodes,)             the same split on bin ids: left iff
                                            ``code <= bin``; -1 at a leaf
``left``,        int32 (nodes,)             children, as node numbers within the tree
``right``                                   (0: its root); -1 at a leaf
``value``        float64 (nodes, V)         a leaf's output (0 at inner nodes): class
                                            probabilities for a classification forest
                                            (V = C), else one number (V = 1)
``gain``         float64 (nodes,)           the split's gain (0 at a leaf)
``rows``         float64 (nodes,)           training rows that reached the node (a
                                            bagged forest: rows drawn, with repeats)
``tree_start``   int64 (trees + 1,)         tree t's nodes: ``tree_start[t]:
                                            tree_start[t+1]``
``tree_column``  int32 (trees,)             the output column tree t adds to (boosted
                                            softmax: its class; else 0)
``base_score``   float64 (width,)           the raw output before any tree (boosting:
                                            the loss's best constant; forest: 0)
``edges``,       float64, int64             the training bins (:mod:`mpigd.trees.binning`),
``edge_offsets``                            for inspection; prediction needs only
                                            ``threshold``
===============  =========================  ============================================

The raw output of a row is ``base_score`` plus the sum of its leaves' values, added in
tree order, in ``width`` columns (classes for a classification forest and for boosted
softmax; 1 otherwise). A forest averages it (``/ trees``); boosting maps it through the
loss's link: the identity (squared), the logistic function, or softmax. Because a
split's threshold is its bin's upper edge, raw features reach the leaves their bin ids
reached in training, bit for bit.
"""

from __future__ import annotations

import numpy as np

from kernels import trees as tree_kernels
from mpigd.errors import DataError
from mpigd.models.base import Model

#: The tasks a tree ensemble learns (the loss and leaf values follow from the task).
TREE_TASKS = ("regression", "binary", "multiclass")
#: Per-node arrays, and the per-tree and whole-ensemble ones, of the layout above.
NODE_ARRAYS = ("feature", "threshold", "bin", "left", "right", "value", "gain", "rows")
#: Dtype of each saved array.
DTYPES = {"feature": np.int32, "threshold": np.float64, "bin": np.int32, "left": np.int32,
          "right": np.int32, "value": np.float64, "gain": np.float64, "rows": np.float64,
          "tree_start": np.int64, "tree_column": np.int32, "base_score": np.float64,
          "edges": np.float64, "edge_offsets": np.int64}  # fmt: skip
#: Smallest probability a log loss takes the logarithm of (as scikit-learn's log_loss).
PROBABILITY_FLOOR = 1e-15


class TreeEnsemble(Model):
    """A forest (``kind`` ``forest``) or a boosted model (``gbt``) of trees as arrays.

    ``width`` output columns: classes for a classification forest or a multiclass
    boosted model, else 1. The same on every rank; it holds no rows.
    """

    tasks = TREE_TASKS
    loss_without_gradient = True

    def __init__(self, kind: str, n_features: int, task: str, n_classes: int | None) -> None:
        super().__init__(None, n_features, n_classes)
        self.name, self.task = kind, task
        classifies = task != "regression"
        self.value_width = n_classes if kind == "forest" and classifies else 1
        self.width = n_classes if classifies and (kind == "forest" or n_classes > 2) else 1
        self.base_score = np.zeros(self.width)
        self.bins: dict = {}
        self._trees: list[dict] = []
        self._columns: list[int] = []
        self._joined: dict | None = None
        self._cache: tuple | None = None  # (X, trees summed, raw output): raw_output's

    # the flat-parameter interface of Model: a tree ensemble has none
    @property
    def n_params(self) -> int:
        return 0

    @property
    def reg_mask(self) -> np.ndarray:
        return np.zeros(0)

    def layout(self) -> dict:
        """The arrays of the layout above (no flat vector: ``n_params`` is 0)."""
        return {"trees": self.n_trees, "nodes": int(self.arrays()["tree_start"][-1]),
                "width": self.width, "value_width": self.value_width}  # fmt: skip

    @property
    def n_trees(self) -> int:
        return len(self._trees)

    def add_tree(self, tree: dict, column: int = 0) -> None:
        """Append one grown tree (a dict of :data:`NODE_ARRAYS`) adding to ``column``."""
        self._trees.append({name: np.asarray(tree[name], DTYPES[name]) for name in NODE_ARRAYS})
        self._columns.append(column)
        self._joined = None

    def arrays(self) -> dict:
        """The trees in the layout above (concatenated once, then cached)."""
        if self._joined is None:
            sizes = [len(tree["feature"]) for tree in self._trees]
            joined = {
                name: (np.concatenate([tree[name] for tree in self._trees]) if self._trees
                       else np.zeros((0, self.value_width) if name == "value" else 0,
                                     DTYPES[name]))
                for name in NODE_ARRAYS
            }  # fmt: skip
            joined["tree_start"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            joined["tree_column"] = np.asarray(self._columns, np.int32)
            self._joined = joined
        return self._joined

    def saved_arrays(self) -> dict:
        return {**self.arrays(), "base_score": self.base_score, **self.bins}

    def load_saved_arrays(self, arrays: dict | None) -> None:
        """Replace the trees by those of ``arrays`` (a checkpoint's or model.h5's),
        checked (DataError naming what is wrong)."""
        arrays = arrays or {}
        self._trees, self._columns, self._joined, self._cache = [], [], None, None
        check_arrays(arrays, self, "the saved trees")
        starts = arrays["tree_start"]
        for t, column in enumerate(arrays["tree_column"]):
            part = slice(int(starts[t]), int(starts[t + 1]))
            self.add_tree({name: arrays[name][part] for name in NODE_ARRAYS}, int(column))
        self.base_score = np.array(arrays["base_score"], np.float64)
        self.bins = {name: arrays[name] for name in ("edges", "edge_offsets") if name in arrays}

    @classmethod
    def from_model_file(cls, info: dict, arrays: dict | None, path: str) -> TreeEnsemble:
        """The ensemble model.h5 at ``path`` holds (``info``: its model attribute);
        DataError if its trees are missing or damaged."""
        ensemble = cls(info["model"], info["n_features"], info["task"], info["n_classes"])
        try:
            ensemble.load_saved_arrays(arrays)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
        return ensemble

    def raw_output(self, X, first_tree: int = 0, stop_tree: int | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """(n, width) float64: the outputs of trees ``first_tree:stop_tree`` (None: to
        the last) summed over the rows of ``X``, added to ``out`` when given (an
        incremental update), else to ``base_score``.

        The whole output of the same ``X`` object (no ``first_tree``, ``stop_tree`` or
        ``out``) is kept, and a later call adds only the trees grown since: the test
        rows' metrics after every epoch cost one epoch's trees each. Treat that
        returned array as read-only.
        """
        stop_tree = self.n_trees if stop_tree is None else stop_tree
        if out is not None or first_tree or stop_tree != self.n_trees:
            return self._add_trees(X, first_tree, stop_tree, out)
        cached = self._cache
        if cached is not None and cached[0] is X and cached[1] <= self.n_trees:
            out, first_tree = cached[2], cached[1]
        else:
            out = np.tile(self.base_score, (X.shape[0], 1))
        self._add_trees(X, first_tree, stop_tree, out)
        self._cache = (X, stop_tree, out)
        return out

    def _add_trees(self, X, first_tree: int, stop_tree: int, out) -> np.ndarray:
        if out is None:
            out = np.tile(self.base_score, (X.shape[0], 1))
        a = self.arrays()
        if first_tree < stop_tree and X.shape[0]:
            starts = a["tree_start"][first_tree : stop_tree + 1]
            nodes = slice(int(starts[0]), int(starts[-1]))
            tree_kernels.predict(X, a["feature"][nodes], a["threshold"][nodes], a["left"][nodes],
                                 a["right"][nodes], a["value"][nodes], starts - starts[0],
                                 a["tree_column"][first_tree:stop_tree], out)  # fmt: skip
        return out

    def output(self, raw: np.ndarray) -> np.ndarray:
        """Predicted class probabilities (n, C), or values (n,), from the raw output."""
        if self.name == "forest":
            mean = raw / max(self.n_trees, 1)
            return mean[:, 0] if self.task == "regression" else mean
        if self.task == "regression":
            return raw[:, 0]
        if self.task == "binary":
            p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            return np.column_stack([1.0 - p, p])
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def row_losses(self, raw: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row loss of the raw outputs: half the squared error (regression), the log
        loss of the predicted probability of the label (classification; boosting
        computes it from the margin, which no probability floor limits)."""
        if self.task == "regression":
            return 0.5 * (self.output(raw) - y) ** 2
        if self.name == "gbt" and self.task == "binary":
            z = raw[:, 0]
            return np.logaddexp(0.0, z) - y * z
        if self.name == "gbt":
            top = raw.max(axis=1)
            log_sum = top + np.log(np.exp(raw - top[:, None]).sum(axis=1))
            return log_sum - raw[np.arange(len(y)), y]
        p = self.output(raw)[np.arange(len(y)), y]
        return -np.log(np.maximum(p, PROBABILITY_FLOOR))

    def predictions(self, raw: np.ndarray) -> np.ndarray:
        """Class ids (ties: the smallest) or values from the raw outputs."""
        out = self.output(raw)
        return out if self.task == "regression" else np.argmax(out, axis=1)

    # Model's evaluation interface (mpigd.evaluate, eval): params is the empty vector
    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True, accumulate=False) -> float:  # fmt: skip
        """Sum of (weighted) per-row losses over the rows of X; no gradient."""
        del params, grad_out, on_ready, train, accumulate
        if rows is not None:
            X, y = X[rows], y[rows]
            sample_weight = None if sample_weight is None else sample_weight[rows]
        losses = self.row_losses(self.raw_output(X), y)
        return float(np.sum(losses if sample_weight is None else sample_weight * losses))

    def predict(self, X, params) -> np.ndarray:
        del params
        return self.predictions(self.raw_output(X))


def check_arrays(arrays: dict, ensemble: TreeEnsemble, what: str) -> None:
    """DataError unless ``arrays`` are a consistent layout for ``ensemble``'s features and
    output width: every array present with its dtype kind and length, ``tree_start`` a
    non-decreasing partition of the nodes, children inside their tree, split features
    in range, finite thresholds and values."""
    needed = (*NODE_ARRAYS, "tree_start", "tree_column", "base_score")
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise DataError(f"{what} lack {', '.join(missing)}")
    a = {name: np.asarray(arrays[name]) for name in needed}
    for name in needed:
        integers, ndim = np.issubdtype(DTYPES[name], np.integer), 2 if name == "value" else 1
        if a[name].ndim != ndim or a[name].dtype.kind not in ("iu" if integers else "iuf"):
            kind = "integers" if integers else "numbers"
            raise DataError(f"{what}: {name} is not a {ndim}-D array of {kind}")
    nodes = len(a["feature"])
    for name in NODE_ARRAYS:
        if len(a[name]) != nodes or a[name].dtype.kind not in "iuf":
            raise DataError(f"{what}: {name} is not a numeric array of {nodes} nodes")
    if a["value"].shape != (nodes, ensemble.value_width) or a["base_score"].shape != (
        ensemble.width,
    ):
        raise DataError(f"{what}: value or base_score has the wrong shape for "
                        f"{ensemble.width} output columns")  # fmt: skip
    starts, trees = a["tree_start"], len(a["tree_column"])
    if (len(starts) != trees + 1 or starts[0] != 0 or starts[-1] != nodes
            or np.any(np.diff(starts) < 1)):  # fmt: skip
        raise DataError(f"{what}: tree_start does not split the {nodes} nodes into {trees} trees")
    if np.any((a["tree_column"] < 0) | (a["tree_column"] + ensemble.value_width > ensemble.width)):
        raise DataError(f"{what}: a tree_column is outside the {ensemble.width} output columns")
    sizes = np.repeat(np.diff(starts), np.diff(starts))
    own = np.arange(nodes) - np.repeat(starts[:-1], np.diff(starts))  # id within its tree
    inner = a["feature"] >= 0
    for child in ("left", "right"):  # created after their parent: no path can loop
        ids = a[child][inner]
        if np.any((ids <= own[inner]) | (ids >= sizes[inner])):
            raise DataError(f"{what}: a {child} child is not a later node of its tree")
    if np.any(a["feature"][inner] >= ensemble.n_features):
        raise DataError(f"{what}: a split feature is not among the {ensemble.n_features} features")
    if not (np.isfinite(a["threshold"][inner]).all() and np.isfinite(a["value"]).all()
            and np.isfinite(a["base_score"]).all()):  # fmt: skip
        raise DataError(f"{what}: a threshold or a value is not finite")
