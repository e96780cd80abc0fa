"""Bad input to a tree model ends in one clear error, never a traceback or a hang, and
leaves no model.h5: options that no tree run can use (a ConfigError naming the flag),
datasets trees cannot learn from (NaN, sparse, test data of other features) and a
damaged model.h5 given to ``mpigd eval`` (a DataError naming the file).

In-process cases check the exception (an error agreed among the ranks is an
AgreedError whose cause is the original ConfigError or DataError); a few go through
the command line under mpirun (two ranks, one message, exit 2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import REPO, make_problem, rank_statuses, run_mpigd, write_csr_h5, write_h5

from mpigd.comm import EXIT_USER_ERROR
from mpigd.config import TrainConfig
from mpigd.errors import ConfigError, DataError, MpigdError
from mpigd.evaluate import evaluate_run
from mpigd.run import train

pytestmark = pytest.mark.timeout(120)

#: A tiny boosted model: a couple of rounds of shallow trees.
GBT = {"model": "gbt", "rounds": 2, "max_depth": 2}
#: A tiny model of each kind.
SMALL = {"gbt": GBT, "forest": {"model": "forest", "trees": 2, "max_depth": 2}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small binary dataset: train.h5 (200 rows, 4 features)."""
    X, y = make_problem("binary", n_rows=200, d=4)
    return str(write_h5(tmp_path_factory.mktemp("data") / "train.h5", X, y, "binary", 2))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished gbt run directory (3 rounds of depth-2 trees) on ``data``."""
    out = tmp_path_factory.mktemp("runs") / "gbt"
    train(TrainConfig(data=data, out=str(out), progress="quiet", **{**GBT, "rounds": 3}))
    return out


def cause(exc: BaseException) -> BaseException:
    """The original error behind an agreed one (``raise AgreedError(...) from error``)."""
    while exc.__cause__ is not None and isinstance(exc.__cause__, MpigdError):
        exc = exc.__cause__
    return exc


def one_message(result, *words) -> None:
    """The command failed with exit 2 and one ``mpigd: error`` line holding ``words``."""
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], result.stderr


# --- options no tree run can use ----------------------------------------------------------

CONFIG_CASES = [
    ({**GBT, "early_stop": 3}, "--early-stop watches the --test-data loss: give --test-data"),
    ({**GBT, "strategy": "ps-sync"}, "use --strategy allreduce or reduce-scatter"),
    ({"model": "logreg", "strategy": "reduce-scatter"},
     "--strategy reduce-scatter combines the histograms of --model forest or gbt"),
    ({"model": "forest", "features_per_node": "0"}, "--features-per-node must be auto, sqrt, "
                                                    "log2, all or a fraction in (0, 1], got '0'"),
    ({"model": "forest", "features_per_node": "1.5"}, "a fraction in (0, 1], got '1.5'"),
    ({"model": "forest", "features_per_node": "abc"}, "a fraction in (0, 1], got 'abc'"),
    ({"model": "forest", "features_per_node": "nan"}, "a fraction in (0, 1], got 'nan'"),
    ({**GBT, "max_bins": 1}, "--max-bins must be in [2, 256], got 1"),
    ({**GBT, "max_bins": 257}, "--max-bins must be in [2, 256], got 257"),
    ({**GBT, "max_depth": 0}, "--max-depth must be in [1, 30], got 0"),
    ({"model": "forest", "batch_size": 10, "optimizer": "sgd"},
     "--model forest and gbt grow each tree from all training rows: drop --batch-size"),
]  # fmt: skip
CONFIG_IDS = ["early-stop-no-test", "ps-sync-gbt", "reduce-scatter-logreg", "per-node-0",
              "per-node-1.5", "per-node-abc", "per-node-nan", "max-bins-1", "max-bins-257",
              "max-depth-0", "batch-size-forest-sgd"]  # fmt: skip


@pytest.mark.parametrize("options, message", CONFIG_CASES, ids=CONFIG_IDS)
def test_an_option_no_tree_run_can_use_is_a_config_error(data, tmp_path, options, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(data=data, out=str(tmp_path / "run"), progress="quiet", **options)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["gbt", "forest"])
def test_batch_size_with_a_tree_model_says_trees_use_all_rows(data, tmp_path, model):
    with pytest.raises(ConfigError) as info:
        TrainConfig(data=data, out=str(tmp_path / "run"), model=model, batch_size=10)
    assert "grow each tree from all training rows: drop --batch-size" in str(info.value)


@pytest.mark.parametrize(
    "flags, message",
    [(["--strategy", "ps-sync"], "use --strategy allreduce or reduce-scatter"),
     (["--max-bins", "257"], "--max-bins must be in [2, 256], got 257")],
    ids=["ps-sync", "max-bins-257"],
)  # fmt: skip
def test_a_bad_tree_option_on_the_command_line_fails_every_rank_once(data, tmp_path, flags,
                                                                      message):  # fmt: skip
    out = tmp_path / "run"
    result = run_mpigd(2, "train", "--data", data, "--out", str(out), "--model", "gbt",
                       "--rounds", "2", *flags, "--quiet", timeout=60)  # fmt: skip
    one_message(result, message)
    assert not (out / "model.h5").exists()


# --- datasets trees cannot learn from -----------------------------------------------------


def nan_dataset(tmp_path, row=3, column=1):
    X, y = make_problem("binary", n_rows=120, d=4)
    X[row, column] = np.nan
    return str(write_h5(tmp_path / "nan.h5", X, y, "binary", 2))


@pytest.mark.parametrize("model", ["gbt", "forest"])
def test_nan_in_the_training_rows_is_refused_naming_file_row_and_column(tmp_path, model):
    path = nan_dataset(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(MpigdError) as info:
        train(TrainConfig(data=path, out=str(out), progress="quiet", **SMALL[model]))
    assert isinstance(cause(info.value), DataError)
    assert f"file {path} has a non-finite value (nan) in X at row 3, column 1" in str(info.value)
    assert not (out / "model.h5").exists()


def test_nan_in_the_test_rows_is_refused(data, tmp_path):
    path = nan_dataset(tmp_path, row=7, column=2)
    out = tmp_path / "run"
    with pytest.raises(MpigdError) as info:
        train(TrainConfig(data=data, test_data=path, out=str(out), progress="quiet", **GBT))
    assert isinstance(cause(info.value), DataError)
    assert f"file {path} has a non-finite value (nan) in X at row 7, column 2" in str(info.value)
    assert not (out / "model.h5").exists()


def test_nan_in_rows_only_rank_1_reads_fails_both_ranks_with_one_message(tmp_path):
    X, y = make_problem("binary", n_rows=120, d=4)
    X[100, 0] = np.nan
    write_h5(tmp_path / "data" / "part-00000.h5", X[:60], y[:60], "binary", 2)
    write_h5(tmp_path / "data" / "part-00001.h5", X[60:], y[60:], "binary", 2)
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    result = run_mpigd(2, "train", "--data", str(tmp_path / "data"), "--out", str(out),
                       "--model", "gbt", "--rounds", "2", "--quiet", statuses=statuses,
                       timeout=60)  # fmt: skip
    one_message(result, "part-00001.h5 has a non-finite value (nan) in X at row 40, column 0")
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    assert not (out / "model.h5").exists()


def sparse_dataset(tmp_path) -> str:
    X = sp.random(80, 6, density=0.3, format="csr", random_state=0)
    X.sort_indices()
    y = (np.arange(80) % 2).astype(np.int64)
    return str(write_csr_h5(tmp_path / "sparse.h5", X, y, "binary", 2))


@pytest.mark.parametrize("model", ["gbt", "forest"])
def test_a_sparse_dataset_is_refused_saying_trees_need_dense_data(tmp_path, model):
    path = sparse_dataset(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(MpigdError) as info:
        train(TrainConfig(data=path, out=str(out), progress="quiet", **SMALL[model]))
    assert isinstance(cause(info.value), ConfigError)
    assert f"--model {model} bins every feature of every row: it needs a dense dataset, and " \
           f"{path} is sparse" in str(info.value)  # fmt: skip
    assert not (out / "model.h5").exists()


def test_a_sparse_dataset_fails_both_ranks_with_one_message(tmp_path):
    path = sparse_dataset(tmp_path)
    out = tmp_path / "run"
    result = run_mpigd(2, "train", "--data", path, "--out", str(out), "--model", "forest",
                       "--trees", "2", "--quiet", timeout=60)  # fmt: skip
    one_message(result, "needs a dense dataset", f"{path} is sparse")
    assert not (out / "model.h5").exists()


def test_test_data_with_other_features_is_refused(data, tmp_path):
    X, y = make_problem("binary", n_rows=50, d=5)
    path = str(write_h5(tmp_path / "test5.h5", X, y, "binary", 2))
    out = tmp_path / "run"
    with pytest.raises(MpigdError) as info:
        train(TrainConfig(data=data, test_data=path, out=str(out), progress="quiet", **GBT))
    assert isinstance(cause(info.value), DataError)
    assert f"test data {path} (5 features, binary, 2 classes) does not match training data " \
           f"{data} (4 features, binary, 2 classes)" in str(info.value)  # fmt: skip
    assert not (out / "model.h5").exists()


# --- a damaged model.h5 given to mpigd eval -----------------------------------------------


def damaged(trained, tmp_path, damage):
    """A copy of the ``trained`` run directory whose model.h5 group ``model`` went
    through ``damage(group)``."""
    out = tmp_path / "damaged"
    shutil.copytree(trained, out)
    with h5py.File(out / "model.h5", "r+") as handle:
        damage(handle["model"])
    return out


def replace(group, name, value) -> None:
    del group[name]
    group.create_dataset(name, data=value)


def set_at_inner(name, value, which=0):
    """Damage: ``name`` of the first tree's ``which``-th inner node (0: its root) set to
    ``value``, or to ``value(group, node)`` when it is a function."""

    def damage(group):
        node = int(np.flatnonzero(group["feature"][()] >= 0)[which])
        array = group[name][()]
        array[node] = value(group, node) if callable(value) else value
        replace(group, name, array)

    return damage


def first_tree_size(group, node) -> int:
    """The first tree's node count: as a child id, the next tree's root."""
    return int(group["tree_start"][1])


def set_first_leaf_value(group):
    value = group["value"][()]
    value[np.flatnonzero(group["feature"][()] < 0)[0]] = np.nan
    replace(group, "value", value)


DAMAGES = {
    "no-threshold": (lambda group: group.__delitem__("threshold"), "saved trees lack threshold"),
    "no-left": (lambda group: group.__delitem__("left"), "the saved trees lack left"),
    "no-tree-start": (lambda group: group.__delitem__("tree_start"), "lack tree_start"),
    "empty-group": (lambda group: [group.__delitem__(name) for name in list(group)],
                    "the saved trees lack feature, threshold, bin, left, right, value"),
    "left-in-next-tree": (set_at_inner("left", first_tree_size), "a left child is not a later "
                                                                 "node of its tree"),
    "left-far-outside": (set_at_inner("left", 10**6), "a left child is not a later node"),
    "right-negative": (set_at_inner("right", -5), "a right child is not a later node"),
    "left-own-node": (set_at_inner("left", lambda group, node: node), "a left child is not a "
                                                                      "later node"),
    "right-to-the-root": (set_at_inner("right", 0, which=1), "a right child is not a later "
                                                             "node"),
    "nan-threshold": (set_at_inner("threshold", np.nan), "a threshold or a value is not finite"),
    "nan-leaf-value": (set_first_leaf_value, "a threshold or a value is not finite"),
    "feature-out-of-range": (set_at_inner("feature", 4), "a split feature is not among the 4 "
                                                        "features"),
    "short-rows": (lambda group: replace(group, "rows", group["rows"][:-1]),
                   "rows is not a numeric array of"),
    "text-threshold": (lambda group: replace(group, "threshold", np.array(
        [b"x"] * len(group["threshold"]))), "threshold is not a"),
    "tree-start-past-end": (lambda group: replace(group, "tree_start", group["tree_start"][()]
                                                  + 1), "tree_start does not split the"),
    "value-1d": (lambda group: replace(group, "value", group["value"][:, 0]),
                 ("value or base_score has the wrong shape", "value is not a 2-D array")),
}  # fmt: skip


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_model_file_is_one_data_error_naming_it(trained, data, tmp_path, name):
    damage, messages = DAMAGES[name]  # the message, or the ones equally right
    out = damaged(trained, tmp_path, damage)
    with pytest.raises(MpigdError) as info:
        evaluate_run(str(out), data)
    assert isinstance(cause(info.value), DataError)
    assert str(info.value).startswith(f"{out}/model.h5: ")
    messages = (messages,) if isinstance(messages, str) else messages
    assert any(message in str(info.value) for message in messages), str(info.value)


#: Damage in the arrays' shapes and kinds, and a member that is no dataset.
GAPS = {
    "feature-2d": (
        lambda group: replace(group, "feature", np.stack([group["feature"][()]] * 2, axis=1)),
        "a 2-D node array (right length) passes the length check, then IndexError"),
    "tree-start-float": (
        lambda group: replace(group, "tree_start", group["tree_start"][()].astype(np.float64)),
        "a float tree_start reaches np.repeat: TypeError (cannot cast float64 to int64)"),
    "tree-start-scalar": (
        lambda group: replace(group, "tree_start", 3),
        "a scalar tree_start: TypeError (len() of unsized object)"),
    "member-is-a-group": (
        lambda group: (group.__delitem__("left"), group.create_group("left")),
        "record.run_dir.read_arrays reads group['left'][()] of a subgroup: TypeError, which "
        "load_model does not catch"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(GAPS))
def test_damage_of_shapes_and_kinds_is_one_data_error_naming_the_file(trained, data, tmp_path,
                                                                      name):  # fmt: skip
    damage, _ = GAPS[name]
    out = damaged(trained, tmp_path, damage)
    with pytest.raises(MpigdError) as info:
        evaluate_run(str(out), data)
    assert isinstance(cause(info.value), DataError)
    assert str(info.value).startswith(f"{out}/model.h5")


def test_mpigd_eval_of_a_damaged_model_exits_2_with_one_message(trained, data, tmp_path):
    out = damaged(trained, tmp_path, set_at_inner("left", 10**6))
    result = subprocess.run([sys.executable, "-m", "mpigd", "eval", str(out), "--data", data],
                            capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    one_message(result, f"{out}/model.h5: the saved trees: a left child is not a later node")
    assert result.stdout == ""


def test_the_undamaged_model_evaluates(trained, data):
    """The damage above is what the refusals are about: the saved run itself is fine."""
    metrics = evaluate_run(str(trained), data)
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["model"] == "gbt" and 0.5 < metrics["accuracy"] <= 1
    assert metrics["loss"] == pytest.approx(last["train_loss"], rel=1e-12)
