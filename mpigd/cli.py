"""Argument parsing for ``python -m mpigd {data,train,eval,sweep}`` (docs/architecture.md).

The ``train`` flags, their ``--help`` and the README's option table
(:func:`options_markdown`) are generated from the field metadata of
:class:`mpigd.config.TrainConfig`. ``train`` options may also come from a TOML file
(``--config run.toml``) whose keys are the option names with ``_`` or ``-``
(``batch_size = 512``); flags given on the command line override the file. No numerics
here: each command calls one library function.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields

from kernels import BACKENDS, DEFAULT_BACKEND
from mpigd import __version__
from mpigd.comm import collectively, gather_everywhere, run_guarded, world
from mpigd.config import OPTION_GROUPS, TrainConfig, flag_of, read_toml
from mpigd.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The full ``mpigd`` parser with its ``data``, ``train`` and ``eval`` commands."""
    parser = _Parser(
        prog="mpigd", description="MPI distributed gradient descent for scaling studies."
    )
    parser.add_argument("--version", action="version", version=f"mpigd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_train_command(commands)
    _add_sweep_command(commands)
    evaluate = commands.add_parser("eval", help="evaluate a trained model on a dataset")
    evaluate.add_argument("run_dir", help="run directory holding model.h5")
    evaluate.add_argument("--data", required=True, help="dataset file or shard directory")
    evaluate.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND)
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
    synth.add_argument(
        "--sparse",
        action="store_true",
        help="sparse (CSR) shards whose feature popularity follows a power law",
    )
    synth.add_argument(
        "--nnz-per-row",
        type=int,
        metavar="K",
        help="--sparse: mean distinct features per row (Poisson; default 40, at most --features)",
    )
    synth.add_argument(
        "--zipf-exponent",
        type=float,
        metavar="S",
        help="--sparse: feature of popularity rank r drawn with probability ~ r^-S "
        "(default 1, Zipf's law; 0 = uniform)",
    )
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
        "--label-column",
        type=_column,
        metavar="NAME|INDEX",
        help="CSV: the label column, a header name or an index from 0 (-1 = last); "
        "default: the header's column named 'label', else column 0",
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
        "--features",
        type=int,
        metavar="D",
        help="number of features (libsvm: a larger id is an error)",
    )
    imp.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV: the first line is (not) a header; default: detected",
    )
    imp.add_argument(
        "--zero-based",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="libsvm: feature ids start at 0 (--no-zero-based: at 1); default: that of "
        "--like, else detected over the whole file (1-based when no id is 0)",
    )
    imp.add_argument(
        "--chunk-mb",
        type=float,
        metavar="MB",
        help="libsvm: MiB parsed at a time, per rank (memory is a few times this; "
        "default 64). Under mpirun every rank parses a part of the file",
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


def _column(text: str) -> int | str:
    """``--label-column``: an integer is an index (from 0), anything else a header name."""
    try:
        return int(text)
    except ValueError:
        return text


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
    rerun = sweep.add_mutually_exclusive_group()
    rerun.add_argument(
        "--resume",
        action="store_true",
        help="continue each config from its checkpoint (fresh if none; a completed one stays)",
    )
    rerun.add_argument(
        "--overwrite", action="store_true", help="start each config over, replacing its run"
    )


def _add_train_command(commands) -> None:
    """``train``: one flag per TrainConfig option, generated from its field metadata.

    The flags are listed by topic (one argument group per :data:`OPTION_GROUPS` entry).
    Every one defaults to None, so an option not given on the command line keeps the
    config file's value (:func:`train_config` merges them).
    """
    train = commands.add_parser(
        "train",
        help="train a model (run under mpirun/srun)",
        description="Train a model on the ranks of this MPI job; rank 0 writes OUT.",
    )
    train.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of train options, keyed by option name; flags override it",
    )
    groups = {key: train.add_argument_group(title) for key, title in OPTION_GROUPS.items()}
    for spec in fields(TrainConfig):
        _add_option(groups[spec.metadata["group"]], spec)


def _widths(text: str) -> list[int]:
    """``"256,128"`` -> ``[256, 128]`` (argparse type of ``--hidden``)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of widths: {text}") from exc


#: argparse ``type`` of each annotated TrainConfig field (booleans are switches instead).
_ARGUMENT_TYPES = {
    "str": str,
    "str | None": str,
    "int": int,
    "int | None": int,
    "float": float,
    "float | None": float,
    "list[int]": _widths,
}


def _add_option(group, spec) -> None:
    """Add the flag of the TrainConfig field ``spec`` (and its aliases) to ``group``.

    A boolean is a switch: ``--name`` sets it when it defaults to False, ``--no-name``
    clears it when it defaults to True. Any other option takes a value, checked against
    its choices; its help ends with its default.
    """
    meta = spec.metadata
    aliases = meta["aliases"]
    if aliases:
        group = group.add_mutually_exclusive_group()
    if spec.type == "bool":
        group.add_argument(
            _flag(spec),
            dest=spec.name,
            action="store_false" if spec.default else "store_true",
            default=None,
            help=_escaped(meta["help"]),
        )
    else:
        group.add_argument(
            _flag(spec),
            dest=spec.name,
            type=_ARGUMENT_TYPES[spec.type],
            choices=meta["choices"],
            metavar=meta["metavar"],
            default=None,
            help=_escaped(f"{meta['help']} ({_shown_default(spec)})"),
        )
    for alias, value in aliases.items():
        group.add_argument(
            alias,
            dest=spec.name,
            action="store_const",
            const=value,
            default=None,
            help=f"same as {_flag(spec)} {value}",
        )


def _flag(spec) -> str:
    """The flag of a TrainConfig field: ``--name``, or ``--no-name`` for a switch that
    defaults to on."""
    if spec.type == "bool" and spec.default:
        return "--no-" + flag_of(spec.name)[2:]
    return flag_of(spec.name)


def _shown_default(spec) -> str:
    """``default: VALUE`` for ``--help``, or ``required``; then the valid range, if any."""
    value = _default_value(spec)
    shown = "required" if value is None else f"default: {value}"
    valid = spec.metadata["valid"]
    return shown if valid is None else f"{shown}; {valid.describe()}"


def _default_value(spec) -> str | None:
    """A field's default as it would be typed (``128,64`` for widths, ``none`` when
    unset), or None for an option without a default (a required one)."""
    if spec.default is not MISSING:
        value = spec.default
    elif spec.default_factory is not MISSING:
        value = spec.default_factory()
    else:
        return None
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _escaped(help_text: str) -> str:
    """``help_text`` with ``%`` doubled: argparse %-formats every help string."""
    return help_text.replace("%", "%%")


def options_markdown() -> str:
    """The README's table of every ``train`` option, generated from the field metadata.

    One row per flag (aliases included) in ``--help`` order: the flag with its value,
    the default, the valid range, the group and the one-line help.
    ``tests/test_config.py`` checks that README.md holds exactly this text, so the table
    cannot drift from the code.
    """
    rows = ["| option | default | valid | group | what it does |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    group_order = list(OPTION_GROUPS)
    by_group = sorted(fields(TrainConfig), key=lambda s: group_order.index(s.metadata["group"]))
    for spec in by_group:
        meta = spec.metadata
        if spec.type == "bool":
            usage, default = _flag(spec), "off"
        else:
            value = _default_value(spec)
            usage = f"{_flag(spec)} {_metavar(spec)}"
            default = "required" if value is None else f"`{value}`"
        valid = meta["valid"].describe() if meta["valid"] else ""
        rows.append(_markdown_row(usage, default, valid, meta["group"], meta["help"]))
        for alias, value in meta["aliases"].items():
            rows.append(_markdown_row(alias, "off", "", meta["group"],
                                      f"same as `{_flag(spec)} {value}`"))  # fmt: skip
    return "\n".join(rows) + "\n"


def _metavar(spec) -> str:
    """The value's name as ``--help`` shows it: the metavar, ``{choices}`` or NAME."""
    meta = spec.metadata
    if meta["metavar"]:
        return meta["metavar"]
    if meta["choices"]:
        return "{" + ",".join(meta["choices"]) + "}"
    return spec.name.upper()


def _markdown_row(usage: str, default: str, valid: str, group: str, help_text: str) -> str:
    """One row of :func:`options_markdown`; ``|`` in the help escaped for markdown."""
    escaped_help = help_text.replace("|", "\\|")
    return f"| `{usage}` | {default} | {valid} | {group} | {escaped_help} |"


def train_config(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults < config file < command-line flags into a TrainConfig.

    :meth:`TrainConfig.validate` starts an error about one option's value with that
    option's flag; when the value came from the config file, not the command line, the
    message adds which file, since the flag alone sends the user to the command line.
    """
    from_file = _read_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.keys()}
    values = {**from_file, **flags}
    missing = [name for name in _required_options() if name not in values]
    if missing:
        raise ConfigError("train needs " + ", ".join(flag_of(name) for name in missing))
    try:
        return TrainConfig(**values)
    except ConfigError as exc:
        if any(str(exc).startswith(flag_of(name) + " ") for name in set(from_file) - set(flags)):
            raise ConfigError(f"{exc} (in config file {args.config})") from exc
        raise


def _required_options() -> list[str]:
    """Names of the TrainConfig fields without a default (a flag or the file must give them)."""
    return [
        spec.name
        for spec in fields(TrainConfig)
        if spec.default is MISSING and spec.default_factory is MISSING
    ]


def _read_config_file(path: str) -> dict:
    """The train options of the TOML file ``path`` by option name; ConfigError for a key
    that is no option, or for an option set twice under its two spellings
    (``batch_size`` and ``batch-size``: which one should win is not the reader's guess)."""
    raw = read_toml(path, "config file")
    unknown = sorted({key.replace("-", "_") for key in raw} - set(TrainConfig.keys()))
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
    values, spelt = {}, {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name in values:
            raise ConfigError(f"config file {path}: {flag_of(name)} is set twice, as {spelt[name]} "
                              f"and as {key}; keep one of them")  # fmt: skip
        values[name], spelt[name] = value, key
    return values


def _run(args: argparse.Namespace, hooks=()) -> int:
    """Run the parsed command on this rank; ``hooks`` go to the trainer (``train``)."""
    from mpigd import data, preemption

    if not _trains(args):  # a stop signal ends this command as it would without mpigd
        preemption.stop_listening_from_start()

    if args.command == "train":
        from mpigd.run import train

        ranks = world()
        train(collectively(ranks.comm, lambda: train_config(args)), ranks, hooks=hooks)
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
            sparse=args.sparse,
            nnz_per_row=args.nnz_per_row,
            zipf_exponent=args.zipf_exponent,
        )
        print(json.dumps(summary, indent=2, default=str))
    elif args.action == "import":
        ranks = world()
        summary = collectively(ranks.comm, lambda: _import(args, ranks))
        if ranks.is_root:
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


def _import(args: argparse.Namespace, ranks) -> dict | None:
    """``data import`` on this rank: a libsvm file with every rank (each parses a part of
    it), the other formats on rank 0 alone (the summary; None elsewhere)."""
    from mpigd import data

    if args.format != "libsvm" and not ranks.is_root:
        return None
    return data.import_file(
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
        chunk_mb=args.chunk_mb,
        team=_ImportTeam(ranks) if args.format == "libsvm" else None,
    )


class _ImportTeam:
    """The ranks of a libsvm import as :mod:`mpigd.data.libsvm` uses them (``rank``,
    ``size``, collective ``gather``), through :mod:`mpigd.comm`."""

    def __init__(self, ranks) -> None:
        self.rank, self.size, self._comm = ranks.rank, ranks.size, ranks.comm

    def gather(self, value) -> list:
        return gather_everywhere(self._comm, value)


def _trains(args: argparse.Namespace) -> bool:
    """Whether the command trains (and so stops cleanly on a stop signal)."""
    if args.command == "sweep":
        return not (args.collect or args.list)
    return args.command == "train"


def _sweep(args: argparse.Namespace) -> None:
    from mpigd import sweep

    ranks = world()
    forced = {name: True for name in ("resume", "overwrite") if getattr(args, name)}

    def check_forced() -> None:
        if forced and (args.collect or args.list):
            flag = "--" + next(iter(forced))
            raise ConfigError(f"{flag} applies to a sweep that trains, not to --collect or --list")

    collectively(ranks.comm, check_forced)
    if args.index is not None:
        sweep.run_one(ranks, args.grid, args.out, args.index, forced)
    elif args.collect:
        sweep.collect(ranks, args.grid, args.out)
    elif args.list:
        configs = collectively(ranks.comm, lambda: sweep.list_configs(args.grid, args.out))
        if ranks.is_root:
            print("\n".join(json.dumps(config) for config in configs))
    else:
        sweep.run_sweep(ranks, args.grid, args.out, args.groups, forced=forced)


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one agreed message) and prints help on rank 0."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")

    def _print_message(self, message, file=None) -> None:
        if world().is_root:
            super()._print_message(message, file)


def main(argv: list[str] | None = None, hooks=()) -> int:
    """Entry point: parse, run the command on this rank, return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``mpigd``; default: ``sys.argv[1:]``.
    hooks : sequence of mpigd.run.hooks.Hook
        Extra hooks for a ``train`` run, after its default ones (tests use them).
    """
    ranks = world()

    def parse_and_run() -> int:
        args = collectively(ranks.comm, lambda: build_parser().parse_args(argv))
        return _run(args, hooks)

    return run_guarded(parse_and_run, ranks)
