"""Argument parsing for ``python -m mpigd {data,train,eval,sweep}`` (DESIGN.md, Command line).

``train`` options may also come from a TOML file (``--config run.toml``) whose keys are
the option names with ``_`` or ``-`` (``batch_size = 512``); flags given on the command
line override the file. No numerics here: each command calls one library function.
"""

from __future__ import annotations

import argparse
import json

from mpigd.comm import collectively, run_guarded, world
from mpigd.config import BACKENDS, PROGRESS_MODES, TrainConfig, read_toml
from mpigd.errors import ConfigError
from mpigd.models import MODELS
from mpigd.optim import OPTIMIZERS, SCHEDULES
from mpigd.strategies import STRATEGIES


def build_parser() -> argparse.ArgumentParser:
    """The full ``mpigd`` parser with its ``data``, ``train`` and ``eval`` commands."""
    parser = _Parser(
        prog="mpigd", description="MPI distributed gradient descent for scaling studies."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_train_command(commands)
    _add_sweep_command(commands)
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

    imp = actions.add_parser(
        "import", help="convert libsvm, CSV, .npz or IDX (MNIST) files to the HDF5 format"
    )
    imp.add_argument("file", help="input file (idx: the images, plain or .gz)")
    imp.add_argument("--format", required=True, choices=("libsvm", "csv", "npz", "idx"))
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
    imp.add_argument(
        "--label-values",
        metavar="V0,V1,...",
        help="original label of each class in class order (default: class ids kept, -1/+1 -> 0/1)",
    )
    imp.add_argument(
        "--like",
        metavar="TRAIN_PATH",
        help="reuse task, classes, label values and feature count of an imported dataset",
    )
    imp.add_argument(
        "--features", type=int, metavar="D", help="number of features (libsvm: pad up to D)"
    )
    imp.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV: the first line is (not) a header; default: detected",
    )
    imp.add_argument(
        "--zero-based", action="store_true", help="libsvm feature indices start at 0, not 1"
    )
    imp.add_argument("--labels", help="idx: the IDX label file (class ids), plain or .gz")
    imp.add_argument(
        "--scale",
        type=_pixel_scale,
        metavar="S|auto",
        help="idx: divide pixels by this; default auto: uint8 pixels / 255, into [0, 1]",
    )
    imp.add_argument("--out", required=True, help="a .h5 file, or a directory of shards")

    digits = actions.add_parser(
        "digits", help="write scikit-learn's 8x8 digits (1,797 images, pixels in [0, 1])"
    )
    digits.add_argument("--test-fraction", type=float, default=0.2, help="stratified by class")
    digits.add_argument("--shards", type=int, default=1, help="shard files per split")
    digits.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    digits.add_argument("--seed", type=int, default=0, help="seed of the shuffle and split")
    digits.add_argument("--out", required=True, help="directory; gets train/ and test/")

    inspect = actions.add_parser("inspect", help="print a dataset's shape, task and balance")
    inspect.add_argument("path")


def _pixel_scale(text: str) -> float | None:
    """``--scale``: ``auto`` (``None``) or a number (checked by the importer)."""
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _add_sweep_command(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="train a grid of configs at once, one group of ranks each (mpirun)"
    )
    sweep.add_argument("grid", help="TOML file: shared train options and a [grid] of lists")
    sweep.add_argument("--out", required=True, help="directory for cfg-NNN/ and sweep.csv")
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument("--groups", type=int, default=1, help="rank groups training at once")
    mode.add_argument("--index", type=int, help="train config I alone (a job array task)")
    mode.add_argument("--collect", action="store_true", help="only tabulate the runs in --out")
    mode.add_argument("--list", action="store_true", help="print the configs and stop")


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
    train.add_argument("--hidden", type=_widths, help="mlp: hidden layer widths, e.g. 256,128")
    train.add_argument("--dropout", type=float, help="mlp: dropout probability of hidden units")
    train.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        default=None,
        help="mlp with allreduce: one Allreduce after backpropagation, not buckets during it",
    )
    train.add_argument("--bucket-mb", type=float, help="mlp: gradient bucket size (MiB)")
    train.add_argument(
        "--model-parallel",
        type=int,
        metavar="M",
        help="mlp: split every hidden layer over M ranks (a P/M x M grid)",
    )
    train.add_argument(
        "--accumulate", type=int, metavar="K", help="gradient accumulation micro-batches"
    )
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
        "--server-computes",
        action="store_true",
        default=None,
        help="ps-sync/ps-async: the server (rank 0) also computes on a share of the rows",
    )
    train.add_argument("--sync-every", type=int, metavar="H", help="local-sgd: steps per average")
    train.add_argument(
        "--max-staleness",
        type=int,
        metavar="S",
        help="ps-async: most server versions a gradient may lag (default: unbounded)",
    )
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


def _widths(text: str) -> list[int]:
    """``"256,128"`` -> ``[256, 128]`` (argparse type of ``--hidden``)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of widths: {text}") from exc


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
    raw = read_toml(path, "config file")
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
    elif args.command == "sweep":
        _sweep(args)
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
            label_values=args.label_values,
            like=args.like,
            n_features=args.features,
            header=args.header,
            zero_based=args.zero_based,
            labels=args.labels,
            scale=args.scale,
        )
        print(json.dumps(summary, indent=2, default=str))
    elif args.action == "digits":
        summary = data.write_digits(
            args.out,
            test_fraction=args.test_fraction,
            shards=args.shards,
            dtype=args.dtype,
            seed=args.seed,
        )
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(json.dumps(data.inspect_dataset(args.path), indent=2, default=str))
    return 0


def _sweep(args: argparse.Namespace) -> None:
    from mpigd import sweep

    ranks = world()
    if args.index is not None:
        sweep.run_one(ranks, args.grid, args.out, args.index)
    elif args.collect:
        sweep.collect(ranks, args.grid, args.out)
    elif args.list:
        configs = collectively(ranks.comm, lambda: sweep.list_configs(args.grid, args.out))
        if ranks.is_root:
            print("\n".join(json.dumps(config) for config in configs))
    else:
        sweep.run_sweep(ranks, args.grid, args.out, args.groups)


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
