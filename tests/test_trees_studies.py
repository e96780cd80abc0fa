"""Tree models (issue 14) in the scaling harness and the sweep, end to end: a tiny strong
scaling study of gbt and a forest under both histogram strategies, and sweeps over a
tree hyperparameter.

Serial: the harness and each sweep launch their own ``mpirun``, every run with a time
limit (the study's ``timeout_s``, :func:`helpers.run_mpigd`'s ``timeout``).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import REPO, make_problem, run_mpigd, write_h5
from test_scaling import read_rows, run_harness

from experiments import study_dir
from experiments.study import StudyError, load_study
from experiments.study_points import POINT_FIELDS
from mpigd.sweep import divergence

TREE_FIELDS = ("histogram_s", "split_s", "histogram_mib")

TINY_TREES = """
[study]
name = "tiny-trees"
mode = "strong"
ranks = [1, 2]
repeats = 1
skip_epochs = 1
strategies = ["allreduce", "reduce-scatter"]
models = ["gbt", "forest"]
epoch_fields = ["histogram_s", "split_s", "histogram_mib"]

[data]
task = "binary"
rows = 4000
features = 6
shards = 2
seed = 3

[train]
rounds = 4
trees = 4
max_depth = 3
max_bins = 32

[launch]
timeout_s = 120
"""


@pytest.fixture(scope="module")
def tree_study(tmp_path_factory):
    """The tiny tree study run by the harness: (its results directory, exit status)."""
    tmp_path = tmp_path_factory.mktemp("tree-scaling")
    path = tmp_path / "tiny-trees.toml"
    path.write_text(TINY_TREES)
    return tmp_path / "results" / "tiny-trees", run_harness(tmp_path, path)


@pytest.mark.timeout(240)
def test_a_tree_study_writes_one_sane_point_per_run(tree_study):
    out, status = tree_study
    assert status == 0
    points = read_rows(out / "points.csv")
    assert tuple(points[0]) == POINT_FIELDS + TREE_FIELDS
    assert [(p["strategy"], p["model"], p["ranks"]) for p in points] == [
        (strategy, model, ranks)
        for strategy in ("allreduce", "reduce-scatter")
        for model in ("gbt", "forest")
        for ranks in ("1", "2")
    ]
    for p in points:
        assert p["status"] == "completed", p["run_dir"]
        assert int(p["rows"]) == 4000 and float(p["rows_per_rank"]) == 4000 / int(p["ranks"])
        assert int(p["features"]) == 6
        assert int(p["epochs_measured"]) == 3  # rounds or trees 2..4
        assert float(p["steps_per_epoch"]) == 1  # a round or a tree
        assert float(p["time_s"]) > 0 and float(p["compute_s"]) > 0
        assert float(p["samples_per_s"]) > 0
        parts = sum(float(p[k]) for k in ("compute_s", "comm_s", "io_s", "eval_s", "other_s"))
        assert parts == pytest.approx(float(p["time_s"]))
        assert 0 < float(p["histogram_s"]) < float(p["time_s"])
        assert 0 < float(p["split_s"]) < float(p["time_s"])
        assert float(p["histogram_mib"]) > 0
        run = json.loads((Path(p["run_dir"]) / "run.json").read_text())
        assert run["world_size"] == int(p["ranks"])
        assert run["config"]["model"] == p["model"] and run["config"]["strategy"] == p["strategy"]
    # Every rank count and both strategies grow the same trees: the same final loss (to
    # rounding: the ranks' shares of the loss are summed in another order).
    for model in ("gbt", "forest"):
        losses = [float(p["final_train_loss"]) for p in points if p["model"] == model]
        assert losses == pytest.approx([losses[0]] * 4, rel=1e-10), model
        assert 0 < losses[0] < 0.6931  # below a constant guess's log loss


@pytest.mark.timeout(240)
def test_a_tree_study_has_its_summary_and_figures(tree_study):
    out, _ = tree_study
    summary = read_rows(out / "summary.csv")
    assert len(summary) == 4 * 2  # (strategy, model) x ranks
    for row in summary:
        assert row["repeats"] == "1" and row["baseline_ranks"] == "1"
        assert float(row["time_median_s"]) > 0 and float(row["speedup"]) > 0
        if row["ranks"] == "1":
            assert float(row["speedup"]) == pytest.approx(1.0)
            assert float(row["efficiency"]) == pytest.approx(1.0)
    for name in study_dir.FIGURES:
        assert (out / name).with_suffix(".png").stat().st_size > 1000


@pytest.mark.timeout(240)
def test_analyze_of_a_tree_study_keeps_its_epoch_fields(tree_study, tmp_path):
    out, _ = tree_study
    path = tmp_path / "tiny-trees.toml"
    path.write_text(TINY_TREES)
    copy = tmp_path / "results" / "tiny-trees"
    shutil.copytree(out, copy)
    (copy / "points.csv").unlink()
    assert run_harness(tmp_path, path, "--analyze") == 0
    before, after = read_rows(out / "points.csv"), read_rows(copy / "points.csv")
    assert [p["histogram_mib"] for p in after] == [p["histogram_mib"] for p in before]


def test_a_tree_study_counts_its_epochs_by_rounds_or_trees(tmp_path):
    path = tmp_path / "tiny-trees.toml"
    path.write_text(
        TINY_TREES.replace("rounds = 4", "rounds = 1").replace("trees = 4", "epochs = 9")
    )
    with pytest.raises(StudyError, match=r"rounds must exceed skip_epochs \(1\)"):
        load_study(path)
    path.write_text(TINY_TREES.replace("trees = 4", "trees = 1"))
    with pytest.raises(StudyError, match=r"trees must exceed skip_epochs") as error:
        load_study(path)
    assert "rounds" not in str(error.value)
    path.write_text(TINY_TREES.replace("rounds = 4", "epochs = 1"))  # gbt runs 100 rounds
    assert load_study(path).models == ("gbt", "forest")


def test_the_shipped_tree_study_compares_both_strategies():
    study = load_study(REPO / "experiments" / "studies" / "trees.toml")
    assert study.mode == "strong" and study.ranks == (1, 2, 4)
    assert set(study.strategies) == {"allreduce", "reduce-scatter"}
    assert "gbt" in study.models and set(TREE_FIELDS) <= set(study.epoch_fields)


# The sweep over tree hyperparameters.


def tree_grid(directory: Path, shared: str, grid: str) -> Path:
    """A grid file over a small binary problem with a test split."""
    X, y = make_problem("binary", n_rows=800, d=6, seed=3)
    train = write_h5(directory / "train.h5", X[:600], y[:600], "binary", 2)
    test = write_h5(directory / "test.h5", X[600:], y[600:], "binary", 2)
    path = directory / "grid.toml"
    path.write_text(f'data = "{train}"\ntest_data = "{test}"\n{shared}\n[grid]\n{grid}\n')
    return path


def read_table(out: Path) -> list[dict]:
    with open(out / "sweep.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.timeout(120)
def test_a_sweep_over_gbt_depths_gives_one_run_per_point(tmp_path):
    grid = tree_grid(
        tmp_path, 'model = "gbt"\nrounds = 5\nstrategy = "reduce-scatter"', "max_depth = [1, 3]"
    )
    out = tmp_path / "sweep"
    result = run_mpigd(2, "sweep", str(grid), "--groups", "2", "--out", str(out), timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    table = read_table(out)
    assert [(row["index"], row["max_depth"], row["ranks"]) for row in table] == [
        ("0", "1", "1"),
        ("1", "3", "1"),
    ]
    assert all(row["status"] == "completed" and row["epochs_run"] == "5" for row in table)
    losses = [float(row["test_loss"]) for row in table]
    assert len(set(losses)) == 2 and all(0 < loss < 0.6932 for loss in losses)
    best = json.loads((out / "sweep.json").read_text())["best"]
    assert best["index"] == losses.index(min(losses))
    for row in table:  # each config's own run, with its own depth
        run = json.loads((Path(row["run_dir"]) / "run.json").read_text())
        assert run["config"]["max_depth"] == int(row["max_depth"])
        assert run["config"]["model"] == "gbt" and run["status"] == "completed"
    # A job array task (slurm/sweep-array.sbatch passes --resume) leaves a completed
    # config as it is.
    again = run_mpigd(1, "sweep", str(grid), "--index", "1", "--resume", "--out", str(out))
    assert again.returncode == 0, again.stderr
    collected = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out))
    assert collected.returncode == 0, collected.stderr
    assert [float(row["test_loss"]) for row in read_table(out)] == losses


@pytest.mark.timeout(120)
def test_a_forest_whose_train_loss_rose_is_completed_not_diverged(tmp_path):
    """A forest's epoch adds an independent tree to an average: its train loss may end
    above the first tree's without anything having diverged."""
    shared = 'model = "forest"\ntrees = 3\nmax_depth = 1\nfeatures_per_node = "0.2"'
    grid = tree_grid(tmp_path, shared, "seed = [0, 1, 2, 3]")  # stumps on 1 feature in 6
    out = tmp_path / "sweep"
    result = run_mpigd(1, "sweep", str(grid), "--out", str(out), timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    table = read_table(out)
    assert [row["status"] for row in table] == ["completed"] * 4, table
    rose = []
    for row in table:
        lines = (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        losses = [json.loads(line)["train_loss"] for line in lines]
        rose.append(losses[-1] > losses[0])
    assert any(rose), "no forest's train loss rose: the test no longer tests the rule"
    assert len({row["test_loss"] for row in table}) == 4


def test_a_loss_that_rose_is_divergence_only_for_a_model_that_descends():
    epochs = [{"epoch": 1, "train_loss": 0.6}, {"epoch": 2, "train_loss": 0.62}]
    assert divergence(epochs).startswith("diverged: train_loss rose")
    assert divergence(epochs, descends=False) is None
    epochs[-1]["train_loss"] = float("inf")
    assert divergence(epochs, descends=False) == "diverged: the final train_loss is inf"
