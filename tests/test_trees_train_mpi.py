"""Tree ensembles trained under mpirun are the same trees on every rank count and with
both histogram strategies, equal the serial reference builder, and resume exactly.

Run by ``make test`` as ``mpirun -n P python -m pytest --with-mpi -m mpi`` (P = 1..4):
each test trains collectively on P ranks, then rank 0 trains the same run alone (on its
own communicator) and compares the two model.h5 files array by array.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import make_problem, write_sharded
from mpi4py import MPI
from tree_reference import grow_reference

from mpigd import comm as mpi
from mpigd.config import TrainConfig
from mpigd.run import train
from mpigd.trees import exact, sampling
from mpigd.trees import split as splits
from mpigd.trees.binning import fit_bins

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

TASKS = {"regression": None, "binary": 2, "multiclass": 3}


def shared_dataset(tmp_path, task, n_rows=601, d=5, seed=0):
    """Rank 0 writes an uneven three-shard dataset; every rank gets (path, X, y)."""
    X, y = make_problem(task, n_rows=n_rows, d=d, n_classes=TASKS[task], seed=seed)
    X[:, 0] = np.round(X[:, 0], 1)  # ties and few distinct values in one feature
    if MPI.COMM_WORLD.rank == 0:
        write_sharded(tmp_path / f"train-{task}", X, y, task, TASKS[task], sizes=(250, 200))
    MPI.COMM_WORLD.Barrier()
    return str(tmp_path / f"train-{task}"), X, y


def saved_trees(run_dir) -> dict:
    """The model.h5 trees rank 0 wrote, read by every rank."""
    MPI.COMM_WORLD.Barrier()
    with h5py.File(f"{run_dir}/model.h5", "r") as handle:
        arrays = {name: handle["model"][name][()] for name in handle["model"]}
    MPI.COMM_WORLD.Barrier()
    return arrays


def train_on(ranks, data, out, **options):
    config = TrainConfig(data=data, out=str(out), progress="quiet", **options)
    return train(config, ranks)


def train_alone(data, out, **options) -> dict | None:
    """Rank 0 trains the run on one rank; its trees (None on the other ranks)."""
    solo = mpi.split(mpi.world(), color=MPI.COMM_WORLD.rank)
    arrays = None
    if MPI.COMM_WORLD.rank == 0:
        train_on(solo, data, out, **options)
        with h5py.File(f"{out}/model.h5", "r") as handle:
            arrays = {name: handle["model"][name][()] for name in handle["model"]}
    mpi.free(solo)
    return MPI.COMM_WORLD.bcast(arrays, root=0)


def assert_same_trees(got: dict, expected: dict) -> None:
    for name in ("feature", "bin", "left", "right", "tree_start", "tree_column", "threshold"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for name in ("value", "base_score", "rows", "gain"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)  # fmt: skip


CASES = [
    ("forest", "binary", {"trees": 3, "max_depth": 4}),
    ("forest", "multiclass", {"trees": 2, "max_depth": 5, "criterion": "entropy",
                              "features_per_node": "0.6"}),
    ("forest", "regression", {"trees": 2, "max_depth": 4, "min_rows_leaf": 5}),
    ("gbt", "binary", {"rounds": 3, "max_depth": 3, "l2": 1.0, "subsample": 0.7}),
    ("gbt", "multiclass", {"rounds": 2, "max_depth": 3, "max_leaves": 5, "colsample": 0.6}),
    ("gbt", "regression", {"rounds": 3, "max_depth": 4, "lr": 0.3, "min_rows_leaf": 10}),
]  # fmt: skip


@pytest.mark.parametrize("model, task, options", CASES)
@pytest.mark.parametrize("strategy", ["allreduce", "reduce-scatter"])
def test_same_trees_on_any_rank_count(mpi_tmp_path, model, task, options, strategy):
    data, _, _ = shared_dataset(mpi_tmp_path, task)
    train_on(mpi.world(), data, mpi_tmp_path / "run", model=model, strategy=strategy,
             max_bins=16, **options)  # fmt: skip
    expected = train_alone(data, mpi_tmp_path / "alone", model=model, max_bins=16, **options)
    assert_same_trees(saved_trees(mpi_tmp_path / "run"), expected)


def reference_forest_tree(X, y, n_classes, max_bins, seed, max_depth, per_node=None):
    """The first tree of a Gini forest (``per_node`` features at each node; None: all),
    grown by the serial reference builder from the same bins, bagging weights and
    features per node."""
    bins = fit_bins(MPI.COMM_SELF, X, 0, len(X), max_bins, seed)
    codes = bins.codes(X)
    draws = sampling.poisson1(sampling.uniform(seed, sampling.bagging_stream(0),
                                               np.arange(len(X)))).astype(np.float64)  # fmt: skip
    stats = np.zeros((len(X), 1 + n_classes))
    stats[:, 0] = draws
    stats[np.arange(len(X)), 1 + y] = draws
    exact.round_to_grid(stats, exact.exponents(np.abs(stats).sum(axis=0)))
    d = X.shape[1]

    def allowed(node):
        return sampling.node_features(seed, 0, np.array([node]), d, per_node)[0]

    return grow_reference(codes, stats, splits.criterion("gini"), splits.Limits(min_rows_leaf=1),
                          max_depth, allowed=None if per_node is None else allowed)  # fmt: skip


def test_forest_equals_the_reference_builder(mpi_tmp_path):
    data, X, y = shared_dataset(mpi_tmp_path, "binary")
    train_on(mpi.world(), data, mpi_tmp_path / "run", model="forest", trees=1, max_depth=4,
             max_bins=16, features_per_node="all", seed=3)  # fmt: skip
    got = saved_trees(mpi_tmp_path / "run")
    reference = reference_forest_tree(X, y, 2, 16, 3, 4)
    for name in ("feature", "bin", "left", "right"):
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)
    np.testing.assert_allclose(got["value"], reference["value"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["allreduce", "reduce-scatter"])
def test_forest_with_few_features_per_node_equals_the_reference_builder(mpi_tmp_path, strategy):
    """Nodes that each try their own 2 features (histograms of those alone)."""
    data, X, y = shared_dataset(mpi_tmp_path, "binary")
    train_on(mpi.world(), data, mpi_tmp_path / "run", model="forest", trees=1, max_depth=5,
             max_bins=16, features_per_node=str(2.5 / X.shape[1]), seed=4,
             strategy=strategy)  # fmt: skip
    got = saved_trees(mpi_tmp_path / "run")
    reference = reference_forest_tree(X, y, 2, 16, 4, 5, per_node=2)
    assert len(reference["feature"]) > 7  # it grew
    for name in ("feature", "bin", "left", "right"):
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)
    np.testing.assert_allclose(got["value"], reference["value"], rtol=1e-10, atol=1e-12)


def test_boosting_equals_the_reference_builder(mpi_tmp_path):
    """Two rounds of squared-loss boosting: the reference grows round 2 from the
    gradients at the reference round 1's predictions."""
    data, X, y = shared_dataset(mpi_tmp_path, "regression")
    lr, l2, depth = 0.5, 0.1, 3
    train_on(mpi.world(), data, mpi_tmp_path / "run", model="gbt", rounds=2, max_depth=depth,
             max_bins=16, lr=lr, l2=l2)  # fmt: skip
    got = saved_trees(mpi_tmp_path / "run")
    bins = fit_bins(MPI.COMM_SELF, X, 0, len(X), 16, 0)
    codes = bins.codes(X)
    sums = np.column_stack([np.ones(len(y)), y])
    exact.round_to_grid(sums, exact.exponents(np.abs(sums).sum(axis=0)))
    raw = np.full(len(y), sums[:, 1].sum() / sums[:, 0].sum())
    limits = splits.Limits(min_rows_leaf=1, min_hessian_leaf=1e-3, l2=l2)
    starts = got["tree_start"]
    for t in range(2):
        stats = np.column_stack([np.ones(len(y)), raw - y, np.ones(len(y))])
        exact.round_to_grid(stats, exact.exponents(np.abs(stats).sum(axis=0)))
        tree = grow_reference(codes, stats, splits.criterion("gbt"), limits, depth, lr=lr)
        mine = slice(starts[t], starts[t + 1])
        for name in ("feature", "bin", "left", "right"):
            np.testing.assert_array_equal(got[name][mine], tree[name], err_msg=f"{name} {t}")
        np.testing.assert_allclose(got["value"][mine], tree["value"], rtol=1e-10, atol=1e-12)
        raw = raw + leaf_values_of_rows(tree, codes)


def leaf_values_of_rows(tree: dict, codes: np.ndarray) -> np.ndarray:
    """Each row's leaf value in a reference tree (left iff code <= bin)."""
    out = np.empty(len(codes))
    for i, row in enumerate(codes):
        node = 0
        while tree["feature"][node] >= 0:
            go_left = row[tree["feature"][node]] <= tree["bin"][node]
            node = tree["left"][node] if go_left else tree["right"][node]
        out[i] = tree["value"][node][0]
    return out


@pytest.mark.parametrize("model, options", [("gbt", {"subsample": 0.8}), ("forest", {})])
def test_resume_after_round_k_is_the_uninterrupted_model(mpi_tmp_path, model, options):
    data, _, _ = shared_dataset(mpi_tmp_path, "multiclass")
    count = "rounds" if model == "gbt" else "trees"
    common = {"model": model, "max_depth": 3, "max_bins": 32, **options}
    train_on(mpi.world(), data, mpi_tmp_path / "whole", **{count: 5}, **common)
    train_on(mpi.world(), data, mpi_tmp_path / "cut", **{count: 2}, **common)
    train_on(mpi.world(), data, mpi_tmp_path / "cut", **{count: 5}, resume=True, **common)
    whole, resumed = saved_trees(mpi_tmp_path / "whole"), saved_trees(mpi_tmp_path / "cut")
    for name, array in whole.items():
        np.testing.assert_array_equal(resumed[name], array, err_msg=name)
