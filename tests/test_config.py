"""The train options, declared once in :mod:`mpigd.config`: their metadata, the flags and
``--help`` generated from it, config files, the trajectory fingerprint, option subsets,
and the README's option table."""

from __future__ import annotations

import dataclasses
import math
import re
import types

import pytest
from helpers import REPO

import kernels
from mpigd.cli import build_parser, options_markdown, train_config
from mpigd.config import OPTION_GROUPS, TrainConfig
from mpigd.errors import ConfigError
from mpigd.models import MODELS, TREE_MODELS
from mpigd.optim import OPTIMIZERS, SCHEDULES
from mpigd.strategies import STRATEGIES

REQUIRED = {"data": "train.h5", "out": "runs/x", "model": "logreg"}

#: Options whose value decides the trajectory under every schedule (epochs: cosine only).
TRAJECTORY = {
    "model", "svm_loss", "hidden", "dropout", "strategy", "optimizer", "lr", "lr_schedule",
    "lr_step_epochs", "lr_gamma", "momentum", "nesterov", "batch_size", "lbfgs_memory", "l2",
    "lbfgs_precondition",
    "class_weight", "seed", "sync_every", "max_staleness", "server_computes", "accumulate",
    "max_depth", "max_leaves", "min_rows_leaf", "min_hessian_leaf", "features_per_node",
    "criterion", "bootstrap", "subsample", "colsample", "max_bins",
}  # fmt: skip

#: For every option, a valid value other than the one in ``base_config()``.
OTHER_VALUES = {
    "data": "other.h5", "out": "runs/y", "model": "softmax", "test_data": "test.h5",
    "strategy": "ps-sync", "optimizer": "adam", "lr": 0.01, "lr_schedule": "step",
    "lr_step_epochs": 3, "lr_gamma": 0.5, "momentum": 0.5, "nesterov": True, "batch_size": 32,
    "epochs": 20, "tol": 1e-6, "lbfgs_memory": 5, "l2": 1e-3, "class_weight": "balanced",
    "svm_loss": "squared-hinge", "seed": 7, "backend": "numpy", "progress": "quiet",
    "checkpoint_every": 2, "checkpoint_every_steps": 5, "resume": True, "force_resume": True,
    "overwrite": True, "hidden": [64, 32], "dropout": 0.5, "overlap": False, "bucket_mb": 2.0,
    "accumulate": 2, "model_parallel": 2, "server_computes": True, "sync_every": 2,
    "max_staleness": 1, "timeline": True, "progress_every": 5.0, "exchange": "sparse",
    "servers": 2, "lbfgs_precondition": "none", "trees": 10, "rounds": 10, "max_depth": 3,
    "max_leaves": 8, "min_rows_leaf": 5, "min_hessian_leaf": 0.1, "features_per_node": "0.5",
    "criterion": "entropy", "bootstrap": False, "subsample": 0.5, "colsample": 0.5,
    "max_bins": 64, "early_stop": 3,
}  # fmt: skip


def base_config(**changes) -> TrainConfig:
    return TrainConfig(**{**REQUIRED, **changes})


def parsed_config(*argv: str) -> TrainConfig:
    return train_config(build_parser().parse_args(["train", *argv]))


# -- the metadata ---------------------------------------------------------------------------


def test_every_option_has_one_line_help_and_a_known_group():
    for spec in dataclasses.fields(TrainConfig):
        meta = spec.metadata
        assert meta["group"] in OPTION_GROUPS, spec.name
        assert meta["help"] and "\n" not in meta["help"], spec.name
        assert isinstance(meta["trajectory"], bool) or callable(meta["trajectory"]), spec.name
    used = {spec.metadata["group"] for spec in dataclasses.fields(TrainConfig)}
    assert used == set(OPTION_GROUPS)


def test_choices_come_from_the_registries():
    choices = {spec.name: spec.metadata["choices"] for spec in dataclasses.fields(TrainConfig)}
    assert choices["model"] == tuple(MODELS) + TREE_MODELS
    assert choices["strategy"] == tuple(STRATEGIES) + ("reduce-scatter",)
    assert choices["optimizer"] == OPTIMIZERS
    assert choices["lr_schedule"] == SCHEDULES
    assert choices["backend"] == kernels.BACKENDS == ("numba", "numpy", "cupy")
    assert base_config().backend == kernels.DEFAULT_BACKEND == "numba"
    with pytest.raises(ConfigError, match="--backend 'reference' is not one of numba, numpy"):
        base_config(backend="reference")


def test_the_timeline_option_is_off_by_default():
    assert base_config().timeline is False
    assert parsed_config(*_required_flags(), "--timeline").timeline is True


# -- the command line -----------------------------------------------------------------------


def _required_flags() -> list[str]:
    return ["--data", REQUIRED["data"], "--out", REQUIRED["out"], "--model", REQUIRED["model"]]


def _help_sections(capsys) -> dict[str, str]:
    """``mpigd train --help`` split into its sections, by title, whitespace normalised."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["train", "--help"])
    assert exited.value.code == 0
    sections = {}
    for chunk in capsys.readouterr().out.split("\n\n"):
        title, _, body = chunk.partition(":\n")
        sections[title.strip()] = " ".join(body.split())
    return sections


def _flag(spec) -> str:
    """The flag a user types for the option: ``--no-NAME`` for a switch that is on."""
    name = spec.name.replace("_", "-")
    return f"--no-{name}" if spec.type == "bool" and spec.default else f"--{name}"


def test_help_lists_every_flag_under_its_topic_with_its_default(capsys):
    sections = _help_sections(capsys)
    assert list(OPTION_GROUPS.values()) == [t for t in sections if t in OPTION_GROUPS.values()]
    for spec in dataclasses.fields(TrainConfig):
        title = OPTION_GROUPS[spec.metadata["group"]]
        assert re.search(rf"(^| ){re.escape(_flag(spec))}( |$)", sections[title]), spec.name
    strategy = sections[OPTION_GROUPS["strategy"]]
    assert "--backend {numba,numpy,cupy} compute kernels" in strategy
    assert "(default: numba)" in strategy and "--no-overlap mlp with allreduce" in strategy
    optimiser = sections[OPTION_GROUPS["optimiser"]]
    assert (
        "--lr LR learning rate per step; lbfgs ignores it; gbt: the shrinkage of every "
        "tree (default: 0.1; > 0)"
    ) in optimiser
    assert (
        "--momentum MOMENTUM momentum optimiser: momentum coefficient (default: 0.9; in [0, 1))"
        in optimiser
    )
    assert "--batch-size B" in optimiser and "(default: none; >= 1)" in optimiser
    assert (
        "--hidden W[,W...] mlp: hidden layer widths, e.g. 256,128 (default: 128)"
        in (sections[OPTION_GROUPS["model"]])
    )
    output = sections[OPTION_GROUPS["output"]]
    assert "--quiet same as --progress quiet --json same as --progress json" in output
    valued = [s for s in dataclasses.fields(TrainConfig) if s.type != "bool"]
    shown = sum(text.count("(default: ") for text in sections.values())
    assert shown == len(valued) - len(REQUIRED)


def test_flags_not_given_stay_none_so_the_config_file_wins():
    args = build_parser().parse_args(["train", "--lr", "0.5"])
    given = {name: getattr(args, name) for name in TrainConfig.keys()}
    assert given.pop("lr") == 0.5
    assert set(given.values()) == {None}


def test_progress_and_its_aliases_are_mutually_exclusive():
    assert parsed_config(*_required_flags(), "--json").progress == "json"
    assert parsed_config(*_required_flags(), "--quiet").progress == "quiet"
    with pytest.raises(ConfigError, match="not allowed with"):
        parsed_config(*_required_flags(), "--json", "--progress", "bar")


def test_a_config_file_and_flags_give_the_same_config(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text(
        'data = "train.h5"\nout = "runs/x"\nmodel = "mlp"\nhidden = [256, 128]\n'
        'optimizer = "momentum"\nnesterov = true\nlr = 1\nbatch-size = 64\noverlap = false\n'
        'progress = "json"\nmax_staleness = 2\nlr-schedule = "cosine"\ntimeline = true\n'
    )
    flags = parsed_config(
        "--data", "train.h5", "--out", "runs/x", "--model", "mlp", "--hidden", "256,128",
        "--optimizer", "momentum", "--nesterov", "--lr", "1", "--batch-size", "64",
        "--no-overlap", "--json", "--max-staleness", "2", "--lr-schedule", "cosine",
        "--timeline",
    )  # fmt: skip
    from_file = parsed_config("--config", str(file))
    assert from_file == flags and from_file.lr == 1.0 and isinstance(from_file.lr, float)
    assert from_file.hidden == [256, 128] and from_file.overlap is False
    overridden = parsed_config("--config", str(file), "--epochs", "3", "--progress", "bar")
    assert overridden == dataclasses.replace(flags, epochs=3, progress="bar")


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('data = "train.h5"\nlearning-rate = 0.1\n')
    with pytest.raises(ConfigError, match="unknown keys learning_rate"):
        parsed_config("--config", str(file))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "first, second", [("batch_size", "batch-size"), ("batch-size", "batch_size")]
)
def test_an_option_set_twice_in_a_config_file_is_refused(tmp_path, first, second):
    file = tmp_path / "run.toml"
    file.write_text(f'data = "train.h5"\n{first} = 10\n{second} = 20\n')
    message = f"config file {file}: --batch-size is set twice, as {first} and as {second}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        parsed_config("--config", str(file))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "line, message",
    [("nesterov = 1", "--nesterov must be true or false, got 1"),
     ("test-data = 5", "--test-data must be str, got 5"),
     ("lr = true", "--lr must be float or int, got True"),
     ('hidden = "256,128"', "--hidden must be a list of widths, such as [256, 128], got '256,128'"),
     ("lr = -1", "--lr must be > 0, got -1.0")],
)  # fmt: skip
def test_a_bad_value_from_a_config_file_names_its_flag_and_the_file(tmp_path, line, message):
    file = tmp_path / "run.toml"
    file.write_text(f'data = "train.h5"\nout = "runs/x"\nmodel = "mlp"\n{line}\n')
    with pytest.raises(ConfigError, match=re.escape(f"{message} (in config file {file})")):
        parsed_config("--config", str(file))


@pytest.mark.timeout(30)
def test_a_bad_flag_over_a_config_file_does_not_blame_the_file(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('data = "train.h5"\nout = "runs/x"\nmodel = "logreg"\nlr = 0.5\n')
    with pytest.raises(ConfigError) as error:
        parsed_config("--config", str(file), "--lr", "-1")
    assert str(error.value) == "--lr must be > 0, got -1.0"


@pytest.mark.timeout(30)
def test_a_value_of_the_wrong_type_names_the_flag():
    with pytest.raises(ConfigError, match="^--nesterov must be true or false, got 1$"):
        base_config(nesterov=1)


def test_required_options_are_named_when_missing():
    with pytest.raises(ConfigError, match="train needs --out, --model"):
        parsed_config("--data", "train.h5")


# -- the trajectory fingerprint and option subsets ------------------------------------------


def test_every_option_is_covered_by_these_tests():
    assert set(OTHER_VALUES) == set(TrainConfig.keys())


def test_the_fingerprint_holds_exactly_the_trajectory_options():
    config = base_config()
    fingerprint = config.trajectory_fingerprint()
    assert set(fingerprint) == TRAJECTORY
    assert fingerprint == {name: getattr(config, name) for name in TRAJECTORY}
    cosine = base_config(lr_schedule="cosine").trajectory_fingerprint()
    assert set(cosine) == TRAJECTORY | {"epochs"}


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_fingerprint_changes_with_exactly_the_trajectory_options(name, schedule):
    config = base_config(lr_schedule=schedule, optimizer="sgd")  # sgd: any batch size
    changed = dataclasses.replace(config, **{name: OTHER_VALUES[name]})
    decides = name in TRAJECTORY or (name == "epochs" and schedule == "cosine")
    differs = changed.trajectory_fingerprint() != config.trajectory_fingerprint()
    assert differs == decides


def test_subset_holds_only_the_named_options_read_only():
    config = base_config(lr=0.5, sync_every=4)
    options = config.subset(["lr", "sync_every"])
    assert isinstance(options, types.SimpleNamespace)
    assert vars(options) == {"lr": 0.5, "sync_every": 4}
    with pytest.raises(AttributeError):
        options.lr = 1.0
    with pytest.raises(AttributeError):
        options.seed  # noqa: B018 - not in the subset
    with pytest.raises(KeyError, match="validate"):
        config.subset(["lr", "validate"])


# -- ranges, contradictions, ignored options ------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr_gamma": -0.5}, r"--lr-gamma must be in \(0, 1\], got -0.5"),
        ({"lr_gamma": 1.5}, r"--lr-gamma must be in \(0, 1\]"),
        ({"momentum": 1.0}, r"--momentum must be in \[0, 1\), got 1.0"),
        ({"momentum": -0.1}, r"--momentum must be in \[0, 1\)"),
        ({"l2": math.inf}, r"--l2 must be a finite number >= 0, got inf"),
        ({"l2": -1e-3}, r"--l2 must be >= 0"),
        ({"lr": math.nan}, r"--lr must be a finite number > 0"),
        ({"lr": 0.0}, r"--lr must be > 0, got 0.0"),
        ({"tol": math.inf}, r"--tol must be a finite number >= 0"),
        ({"seed": -1}, r"--seed must be in \[0, 2\*\*32\), got -1"),
        ({"seed": 2**32}, r"--seed must be in \[0, 2\*\*32\)"),
        ({"epochs": 0}, r"--epochs must be >= 1, got 0"),
        ({"batch_size": 0, "optimizer": "sgd"}, r"--batch-size must be >= 1"),
        ({"dropout": 1.0}, r"--dropout must be in \[0, 1\)"),
        ({"bucket_mb": math.inf}, r"--bucket-mb must be a finite number > 0"),
        ({"max_staleness": -1}, r"--max-staleness must be >= 0"),
        ({"checkpoint_every": -2}, r"--checkpoint-every must be >= 0"),
        ({"resume": True, "overwrite": True}, "--resume continues .* --overwrite replaces"),
        ({"optimizer": "lbfgs", "batch_size": 64}, "full-batch steps: drop --batch-size"),
    ],
)
def test_a_value_outside_its_range_or_a_contradiction_names_the_flag(changes, message):
    with pytest.raises(ConfigError, match=message):
        base_config(**changes)


def test_every_numeric_option_declares_its_valid_range():
    for spec in dataclasses.fields(TrainConfig):
        numeric = spec.type.split(" ")[0] in ("int", "float")
        assert numeric == (spec.metadata["valid"] is not None), spec.name


def test_options_the_configuration_ignores_are_named_once_each():
    config = base_config(optimizer="sgd", batch_size=10, tol=1e-3, nesterov=True,
                         momentum=0.5, hidden=[64], overlap=False, sync_every=3,
                         lr_gamma=0.5, force_resume=True)  # fmt: skip
    assert config.ignored_options() == [
        "--lr-gamma 0.5 has no effect here: it is used only with --optimizer other than "
        "lbfgs and with --lr-schedule step",
        "--momentum 0.5 has no effect here: it is used only with --optimizer momentum",
        "--nesterov has no effect here: it is used only with --optimizer momentum",
        "--tol 0.001 has no effect here: it is used only without --batch-size (full batch)",
        "--force-resume has no effect here: it is used only with --resume",
        "--hidden 64 has no effect here: it is used only with --model mlp",
        "--no-overlap has no effect here: it is used only with --model mlp and with "
        "--strategy allreduce",
        "--sync-every 3 has no effect here: it is used only with --strategy local-sgd",
    ]
    # The defaults, and options where they apply, are never reported.
    assert base_config().ignored_options() == []
    assert base_config(optimizer="momentum", momentum=0.5, nesterov=True).ignored_options() == []
    assert base_config(optimizer="lbfgs", lr=0.5).ignored_options() == [
        "--lr 0.5 has no effect here: it is used only with --optimizer other than lbfgs"
    ]


# -- the README -----------------------------------------------------------------------------


def test_the_readme_option_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    found = re.search(
        r"<!-- train-options:begin -->\n(.*?)<!-- train-options:end -->", readme, re.DOTALL
    )
    assert found, "README.md lacks the train-options markers"
    assert found.group(1) == options_markdown(), (
        "README.md's option table is out of date: replace the block between the "
        "train-options markers with the output of "
        "python -c 'from mpigd.cli import options_markdown; print(options_markdown(), end=\"\")'"
    )
