"""Argument parsing for ``python -m mpigd {data,train,eval}`` (DESIGN.md, Command line).

``train`` options may also come from a TOML file (``--config run.toml``) whose keys are
the option names with ``_`` or ``-`` (``batch_size = 512``); flags given on the command
line override the file. No numerics here: each command calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys

from mpigd.comm import collectively, run_guarded, world
from mpigd.config import BACKENDS, PROGRESS_MODES, TrainConfig
from mpigd.errors import ConfigError
from mpigd.models import MODELS
from mpigd.optim import OPTIMIZERS, SCHEDULES
from mpigd.strategies import STRATEGIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def build_parser() -> argparse.ArgumentParser:
    """The full ``mpigd`` parser with its ``data``, ``train`` and ``eval`` commands."""
    parser = _Parser(
        prog="mpigd", description="MPI distributed gradient descent for scaling studies."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_train_command(commands)
    evaluate = commands.add_parser("eval", help="evaluate a trained model on a dataset")
    evaluate.add_argument("run_dir", help="run directory holding model.h5")
    evaluate.add_argument("--data", required=True, help="dataset file or shard directory")
    evaluate.add_argument("--backend", choices=BACKENDS, default="numpy")
    return parser


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="create, import and inspect datasets")
    actions = data.add_subparsers(dest="action", required=True)

    synth = actions.add_parser("synth", help="write a synthetic dataset with known truth")
    synth.add_argument("--task", required=True, choices=("regression", "binary", "multiclass"))
    synth.add_argument("--rows", type=int, required=True, help="total rows, train + test")
    synth.add_argument("--features", type=int, required=True)
    synth.add_argument("--classes", type=int, default=None)
    synth.add_argument("--shards", type=int, default=1, help="shard files per split")
    synth.add_argument("--test-fraction", type=float, default=0.2)
    synth.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="directory; gets train/ and test/")

    imp = actions.add_parser("import", help="convert libsvm, CSV or .npz to the HDF5 format")
    imp.add_argument("file")
    imp.add_argument("--format", required=True, choices=("libsvm", "csv", "npz"))
    imp.add_argument(
        "--task",
        choices=("regression", "binary", "multiclass"),
        default=None,
        help="default: inferred from the labels",
    )
    imp.add_argument("--classes", type=int, default=None)
    imp.add_argument("--shards", type=int, default=1)
    imp.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    imp.add_argument(
        "--label-column", type=int, default=0, help="CSV column holding the label (-1 = last)"
    )
    imp.add_argument("--out", required=True, help="a .h5 file, or a directory of shards")

    inspect = actions.add_parser("inspect", help="print a dataset's shape, task and balance")
    inspect.add_argument("path")


def _add_train_command(commands) -> None:
    train = commands.add_parser(
        "train", help="train a model (run under mpirun/srun)", argument_default=None
    )
    train.add_argument("--config", help="TOML file of train options; flags override it")
    train.add_argument("--data", help="training dataset (file or shard directory)")
    train.add_argument("--test-data", help="test dataset, evaluated after every epoch")
    train.add_argument("--out", help="run directory for run.json, metrics.jsonl, model.h5")
    train.add_argument("--model", choices=tuple(MODELS))
    train.add_argument("--svm-loss", choices=("hinge", "squared-hinge"))
    train.add_argument("--strategy", choices=tuple(STRATEGIES))
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr", type=float, help="learning rate (unused by lbfgs)")
    train.add_argument("--lr-schedule", choices=SCHEDULES)
    train.add_argument("--lr-step-epochs", type=int, help="step schedule: epochs per decay")
    train.add_argument("--lr-gamma", type=float, help="step schedule: decay factor")
    train.add_argument("--momentum", type=float, help="momentum coefficient (momentum)")
    train.add_argument("--nesterov", action="store_true", default=None)
    train.add_argument("--batch-size", type=int, help="GLOBAL mini-batch; omit: full batch")
    train.add_argument("--epochs", type=int, help="epochs (lbfgs: iterations)")
    train.add_argument(
        "--tol", type=float, help="stop when the full-batch gradient's max |g_i| <= tol"
    )
    train.add_argument("--lbfgs-memory", type=int, help="L-BFGS correction pairs")
    train.add_argument("--l2", type=float, help="L2 coefficient: + (l2/2)·||w||²")
    train.add_argument("--class-weight", choices=("none", "balanced"))
    train.add_argument("--seed", type=int)
    train.add_argument("--backend", choices=BACKENDS)
    train.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="K",
        help="write checkpoint.h5 every K epochs (always at the end)",
    )
    train.add_argument(
        "--checkpoint-every-steps",
        type=int,
        metavar="K",
        help="write checkpoint.h5 every K optimiser steps",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from OUT/checkpoint.h5 (start fresh if there is none)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace a previous run in OUT (refused otherwise)",
    )
    train.add_argument(
        "--force-resume",
        action="store_true",
        default=None,
        help="resume even from a checkpoint of another config or dataset",
    )
    output = train.add_mutually_exclusive_group()
    output.add_argument("--progress", choices=PROGRESS_MODES)
    output.add_argument("--quiet", dest="progress", action="store_const", const="quiet")
    output.add_argument(
        "--json",
        dest="progress",
        action="store_const",
        const="json",
        help="print each epoch's metrics as a JSON line",
    )


def train_config(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults < config file < command-line flags into a TrainConfig."""
    values = {}
    if args.config:
        values.update(_read_config_file(args.config))
    flags = {k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.keys()}
    values.update(flags)
    missing = [key for key in ("data", "out", "model") if key not in values]
    if missing:
        raise ConfigError("train needs " + ", ".join(f"--{key}" for key in missing))
    return TrainConfig(**values)


def _read_config_file(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - set(TrainConfig.keys()))
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return values


def _run(args: argparse.Namespace) -> int:
    from mpigd import data

    if args.command == "train":
        from mpigd.train import train

        ranks = world()
        train(collectively(ranks.comm, lambda: train_config(args)), ranks)
    elif args.command == "eval":
        from mpigd.evaluate import evaluate_run

        ranks = world()
        metrics = evaluate_run(args.run_dir, args.data, args.backend, ranks)
        if ranks.is_root:
            print(json.dumps(metrics))
    elif args.action == "synth":
        summary = data.write_synthetic(
            args.out,
            args.task,
            args.rows,
            args.features,
            classes=args.classes,
            shards=args.shards,
            test_fraction=args.test_fraction,
            dtype=args.dtype,
            seed=args.seed,
        )
        print(json.dumps(summary, indent=2, default=str))
    elif args.action == "import":
        summary = data.import_file(
            args.file,
            args.format,
            args.out,
            task=args.task,
            n_classes=args.classes,
            shards=args.shards,
            dtype=args.dtype,
            label_column=args.label_column,
        )
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(json.dumps(data.inspect_dataset(args.path), indent=2, default=str))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one agreed message) and prints help on rank 0."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")

    def _print_message(self, message, file=None) -> None:
        if world().is_root:
            super()._print_message(message, file)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run the command on this rank, return the exit status."""
    ranks = world()

    def parse_and_run() -> int:
        args = collectively(ranks.comm, lambda: build_parser().parse_args(argv))
        return _run(args)

    return run_guarded(parse_and_run, ranks)
