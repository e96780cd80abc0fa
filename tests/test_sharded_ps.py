"""The sharded parameter servers' serial parts: key ranges, model shards, the layout's
choice and its refusals (the MPI behaviour is tests/test_sharded_ps_mpi.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from mpigd.config import TrainConfig
from mpigd.errors import ConfigError
from mpigd.models import create_model
from mpigd.run.layouts import DataParallel, ShardedServers, TensorParallel, layout_for
from mpigd.strategies.sharded import KeyRanges, ModelShard, data_share

BACKEND = kernels.get_backend("numpy")


@pytest.mark.parametrize("n_keys, servers", [(7, 1), (7, 2), (7, 3), (10, 4), (3, 3), (2, 3)])
def test_key_ranges_are_contiguous_balanced_and_cover_every_key(n_keys, servers):
    ranges = KeyRanges.split(n_keys, servers)
    spans = [ranges.of(s) for s in range(servers)]
    assert spans[0][0] == 0 and spans[-1][1] == n_keys
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    lengths = [hi - lo for lo, hi in spans]
    assert max(lengths) - min(lengths) <= 1
    assert ranges.of(servers) == (n_keys, n_keys)  # a worker: no keys


def test_cuts_split_sorted_keys_by_owner():
    ranges = KeyRanges.split(10, 3)  # [0, 3), [3, 6), [6, 10)
    keys = np.array([1, 2, 6, 9])
    cuts = ranges.cuts(keys)
    assert [keys[cuts[s] : cuts[s + 1]].tolist() for s in range(3)] == [[1, 2], [], [6, 9]]


def shards(name: str, d: int, servers: int, n_classes=None):
    task = {"linreg": "regression", "softmax": "multiclass"}.get(name, "binary")
    n_classes = n_classes or (None if task == "regression" else 2)

    def make(n_features):
        return create_model(name, BACKEND, n_features, task, n_classes)

    ranges = KeyRanges.split(make(d).n_params, servers)
    return make(d), [ModelShard(make, d, ranges, rank, True) for rank in range(servers + 1)]


@pytest.mark.parametrize("name, classes", [("linreg", None), ("logreg", None), ("svm", None),
                                           ("softmax", 3)])  # fmt: skip
@pytest.mark.parametrize("servers", [1, 2, 3])
def test_shards_hold_their_range_of_the_vector_and_of_its_penalty_mask(name, classes, servers):
    whole, parts = shards(name, 5, servers, classes)
    *on_servers, on_worker = parts
    assert on_worker.n_params == 0 and on_worker.reg_mask.size == 0
    assert sum(shard.n_params for shard in on_servers) == whole.n_params
    mask = np.concatenate([shard.reg_mask for shard in on_servers])
    np.testing.assert_array_equal(mask, whole.reg_mask)
    intercepts = np.flatnonzero(whole.reg_mask == 0)
    assert on_servers[-1].lo <= intercepts.min()  # every intercept on the last server
    features = np.array([1, 3])
    moved = np.concatenate([shard.lo + shard.touched_params(features) for shard in on_servers])
    np.testing.assert_array_equal(moved, whole.touched_params(features))
    with pytest.raises(TypeError, match="key range"):  # batches run on pulled weights
        on_servers[0].loss_grad(None, None, None, np.zeros(0), np.zeros(0))
    for shard in parts:
        assert shard.full_size == whole.n_params and shard.layout() == whole.layout()
        assert np.array_equal(shard.init_params(np.random.default_rng(0)), np.zeros(shard.n_params))


def test_servers_hold_no_rows_and_workers_split_them():
    assert [data_share(rank, 5, 2) for rank in range(5)] == [(0, 0), (0, 0), (0, 3), (1, 3), (2, 3)]


def config(**options) -> TrainConfig:
    base = {"data": "d.h5", "out": "o", "model": "logreg", "optimizer": "sgd", "batch_size": 8}
    return TrainConfig(**{**base, **options})


@pytest.mark.parametrize("options, layout", [
    ({"strategy": "ps-sync", "servers": 2}, ShardedServers),
    ({"strategy": "ps-async", "servers": 3}, ShardedServers),
    ({"strategy": "ps-sync"}, DataParallel),  # one server: today's ps-sync
    ({"strategy": "allreduce", "servers": 2}, DataParallel),  # --servers has no effect there
    ({"model": "mlp", "model_parallel": 2, "servers": 2, "strategy": "ps-sync"}, TensorParallel),
])  # fmt: skip
def test_more_than_one_server_chooses_the_sharded_layout(options, layout):
    assert type(layout_for(config(**options))) is layout


@pytest.mark.parametrize("options, size, message", [
    ({"servers": 3}, 3, "--servers 3 needs at least 4 ranks"),
    ({"server_computes": True}, 4, "drop --server-computes"),
    ({"model": "mlp"}, 4, "use --servers 1"),
    ({"optimizer": "lbfgs", "batch_size": None}, 4, "give --batch-size"),
    ({"optimizer": "gd", "batch_size": None}, 4, "give --batch-size"),
    ({"backend": "cupy"}, 4, "--backend numba or numpy"),
])  # fmt: skip
@pytest.mark.parametrize("strategy", ["ps-sync", "ps-async"])
def test_what_the_sharded_servers_cannot_run_is_one_clear_error(options, size, message, strategy):
    layout = ShardedServers(config(**{"strategy": strategy, "servers": 2, **options}))
    with pytest.raises(ConfigError, match=message):
        layout.check(size)
