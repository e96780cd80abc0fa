"""The training configuration: every option of ``mpigd train``, declared once.

Each :class:`TrainConfig` field carries its metadata (:func:`option`): a one-line help,
the topic group it is listed under, the allowed values, and whether another value makes
a resumed run continue a different trajectory. Everything else is generated from it: the
CLI's flags and ``--help`` (:mod:`mpigd.cli`), the README's option table, the choice
checks of :meth:`TrainConfig.validate` and the checkpoint's config fingerprint
(:meth:`TrainConfig.trajectory_fingerprint`). The CLI fills a config from flags and an
optional TOML config file (flags win); ``run.json`` stores it whole, and ``eval`` reads
the model part back from ``model.h5``.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import MISSING, asdict, dataclass, field, fields

from kernels import BACKENDS, DEFAULT_BACKEND
from mpigd.errors import ConfigError
from mpigd.models import MODELS, TREE_MODELS
from mpigd.optim import FULL_BATCH_ONLY, OPTIMIZERS, SCHEDULES
from mpigd.option_rules import Applies, Contradiction, Range, unless, when
from mpigd.paths import check_input_file
from mpigd.strategies import DEFAULT_STRATEGY, STRATEGIES, TREE_STRATEGIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Python types each annotated field accepts (an int is fine where a float is wanted).
_TYPES = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (float, int),
    "float | None": (float, int, type(None)),
    "bool": (bool,),
    "list[int]": (list,),
}
#: Console output of rank 0 (:mod:`mpigd.progress`).
PROGRESS_MODES = ("bar", "quiet", "json")

#: The topic groups of the options, by key, with the title ``--help`` gives each; in the
#: order ``--help`` and the README list them.
OPTION_GROUPS = {
    "data": "data and run directory",
    "model": "model",
    "optimiser": "optimiser and objective",
    "strategy": "parallel execution: strategy, communication, kernels",
    "trees": "tree ensembles: --model forest and gbt",
    "checkpoints": "checkpoints and resuming",
    "output": "console output and traces",
}


def option(
    default=MISSING,
    *,
    help: str,
    group: str,
    trajectory=False,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    aliases: dict[str, str] | None = None,
    valid: Range | None = None,
    applies: Applies | None = None,
):
    """A TrainConfig field with the metadata that the CLI, README and checkpoints read.

    Parameters
    ----------
    default
        The value when neither a flag nor the config file gives one; leave it out for a
        required option. A list is copied for every config (as a dataclass needs).
    help : str
        One line for ``--help`` and the README's option table.
    group : str
        Key of :data:`OPTION_GROUPS`: the topic the option is listed under.
    trajectory : bool or callable
        Whether another value makes a resumed run continue a different trajectory (a
        checkpoint written under another value is then refused); a predicate
        ``config -> bool`` where that depends on the other options.
    choices : tuple of str, optional
        The allowed values, checked by :meth:`TrainConfig.validate` and by argparse.
    metavar : str, optional
        The value's name in ``--help`` (argparse's default: the option name in capitals).
    aliases : dict, optional
        Extra flags that each set the option to one value, ``{"--quiet": "quiet"}``; the
        CLI makes them mutually exclusive with the option's own flag.
    valid : Range, optional
        The values that mean something (a number; None, where allowed, is always valid).
    applies : Applies, optional
        When the option is read at all; another value where it is not is a warning
        (:meth:`TrainConfig.ignored_options`).
    """
    metadata = {
        "help": help,
        "group": group,
        "trajectory": trajectory,
        "choices": choices,
        "metavar": metavar,
        "aliases": aliases or {},
        "valid": valid,
        "applies": applies,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(name: str) -> str:
    """The command-line flag of the option ``name``: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


#: Common ranges of :func:`option`'s ``valid``.
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
#: Common conditions of :func:`option`'s ``applies``.
_FIRST_ORDER = unless("optimizer", "lbfgs")
_FULL_BATCH = Applies(lambda config: config.batch_size is None, "without --batch-size (full batch)")
_MLP = when("model", "mlp")
_OVERLAPPABLE = _MLP & when("strategy", "allreduce")
_TREES = when("model", *TREE_MODELS)
_FOREST = when("model", "forest")
_GBT = when("model", "gbt")
_GRADIENT = unless("model", *TREE_MODELS)
#: ``--features-per-node`` words (a fraction in (0, 1] is the other kind of value).
FEATURES_PER_NODE = ("auto", "sqrt", "log2", "all")


def _under_cosine_schedule(config: TrainConfig) -> bool:
    """Whether ``epochs`` decides the trajectory: the cosine schedule's length is the run's
    length, so more epochs decay the rate more slowly from the first step on."""
    return config.lr_schedule == "cosine"


def _gradient_strategy(config: TrainConfig) -> bool:
    """Whether ``strategy`` decides the trajectory: it does for the gradient models; both
    histogram strategies grow bit-identical trees (:mod:`mpigd.trees.exact`)."""
    return config.model not in TREE_MODELS


@dataclass
class TrainConfig:
    """Options of one training run. Units: learning rates per step, tolerances absolute."""

    data: str = option(help="training dataset (HDF5 file or shard directory)", group="data")
    out: str = option(help="run directory for run.json, metrics.jsonl, model.h5", group="data")
    model: str = option(
        help="the model to train (forest, gbt: tree ensembles, grown from histograms)",
        group="model",
        trajectory=True,
        choices=tuple(MODELS) + TREE_MODELS,
    )
    test_data: str | None = option(
        None, help="test dataset, evaluated after every epoch", group="data"
    )
    strategy: str = option(
        DEFAULT_STRATEGY,
        help="how the ranks combine their gradients or parameters (trees: their histograms, "
        "allreduce or reduce-scatter)",
        group="strategy",
        choices=tuple(STRATEGIES)
        + tuple(name for name in TREE_STRATEGIES if name not in STRATEGIES),
        trajectory=_gradient_strategy,
    )
    optimizer: str = option(
        "gd",
        help="the optimiser",
        group="optimiser",
        trajectory=True,
        choices=OPTIMIZERS,
        applies=_GRADIENT,
    )
    lr: float = option(
        0.1,
        help="learning rate per step; lbfgs ignores it; gbt: the shrinkage of every tree",
        group="optimiser",
        trajectory=True,
        valid=POSITIVE,
        applies=_FIRST_ORDER,
    )
    lr_schedule: str = option(
        "constant",
        help="how the learning rate changes over the epochs",
        group="optimiser",
        trajectory=True,
        choices=SCHEDULES,
        applies=_FIRST_ORDER,
    )
    lr_step_epochs: int = option(
        10,
        help="step schedule: epochs per decay",
        group="optimiser",
        trajectory=True,
        valid=AT_LEAST_1,
        applies=_FIRST_ORDER & when("lr_schedule", "step"),
    )
    lr_gamma: float = option(
        0.1,
        help="step schedule: decay factor",
        group="optimiser",
        trajectory=True,
        valid=Range(0, 1, low_open=True),
        applies=_FIRST_ORDER & when("lr_schedule", "step"),
    )
    momentum: float = option(
        0.9,
        help="momentum optimiser: momentum coefficient",
        group="optimiser",
        trajectory=True,
        valid=Range(0, 1, high_open=True),
        applies=when("optimizer", "momentum"),
    )
    nesterov: bool = option(
        False,
        help="momentum optimiser: Nesterov momentum",
        group="optimiser",
        trajectory=True,
        applies=when("optimizer", "momentum"),
    )
    batch_size: int | None = option(
        None,
        help="GLOBAL mini-batch, shared among the ranks; none means full batch",
        group="optimiser",
        trajectory=True,
        metavar="B",
        valid=AT_LEAST_1,
    )
    epochs: int = option(
        10,
        help="epochs (lbfgs: iterations; forest and gbt count --trees and --rounds instead)",
        group="optimiser",
        trajectory=_under_cosine_schedule,
        valid=AT_LEAST_1,
        applies=_GRADIENT,
    )
    tol: float | None = option(
        None,
        help="stop when the full-batch gradient's max |g_i| <= tol",
        group="optimiser",
        valid=NON_NEGATIVE,
        applies=_FULL_BATCH,
    )
    lbfgs_memory: int = option(
        10,
        help="lbfgs: correction pairs kept",
        group="optimiser",
        trajectory=True,
        valid=AT_LEAST_1,
        applies=when("optimizer", "lbfgs"),
    )
    lbfgs_precondition: str = option(
        "diagonal",
        help="lbfgs: initial inverse Hessian: none (a multiple of I) or diagonal (per "
        "weight 1 / (mean x_j^2 + l2) of its column: for features of very different scales)",
        group="optimiser",
        trajectory=True,
        choices=("none", "diagonal"),
        applies=when("optimizer", "lbfgs"),
    )
    l2: float = option(
        0.0,
        help="L2 coefficient: + (l2/2)·||w||², intercepts unregularised; gbt: on leaf values",
        group="optimiser",
        trajectory=True,
        valid=NON_NEGATIVE,
    )
    class_weight: str = option(
        "none",
        help="row weights of the loss: none, or balanced (inverse class frequencies)",
        group="optimiser",
        trajectory=True,
        choices=("none", "balanced"),
    )
    svm_loss: str = option(
        "hinge",
        help="svm: the hinge or the squared hinge",
        group="model",
        trajectory=True,
        choices=("hinge", "squared-hinge"),
        applies=when("model", "svm"),
    )
    seed: int = option(
        0,
        help="seed of the initialisation, the mini-batch shuffle and dropout",
        group="optimiser",
        trajectory=True,
        valid=Range(0, 2**32, high_open=True),
    )
    backend: str = option(
        DEFAULT_BACKEND,
        help="compute kernels: numba (compiled), numpy (plain reference), cupy (a GPU per rank)",
        group="strategy",
        choices=BACKENDS,
    )
    progress: str = option(
        "bar",
        help="console output of rank 0: a progress bar, nothing, or JSON lines (one per epoch, "
        "then the final status)",
        group="output",
        choices=PROGRESS_MODES,
        aliases={"--quiet": "quiet", "--json": "json"},
    )
    progress_every: float = option(
        10.0,
        help="bar: seconds between progress lines within an epoch, to stdout (under mpirun "
        "and in batch logs; a single process on a terminal redraws a live bar instead); "
        "0: epoch lines only",
        group="output",
        metavar="S",
        valid=NON_NEGATIVE,
        applies=when("progress", "bar"),
    )
    checkpoint_every: int = option(
        0,
        help="write checkpoint.h5 every K epochs (always at the end)",
        group="checkpoints",
        metavar="K",
        valid=NON_NEGATIVE,
    )
    checkpoint_every_steps: int = option(
        0,
        help="write checkpoint.h5 every K optimiser steps",
        group="checkpoints",
        metavar="K",
        valid=NON_NEGATIVE,
        applies=unless("strategy", "ps-async"),
    )
    resume: bool = option(
        False,
        help="continue from OUT/checkpoint.h5 (start fresh if there is none)",
        group="checkpoints",
    )
    force_resume: bool = option(
        False,
        help="resume even from a checkpoint of another config or dataset",
        group="checkpoints",
        applies=when("resume", True),
    )
    overwrite: bool = option(
        False, help="replace a previous run in OUT (refused otherwise)", group="data"
    )
    hidden: list[int] = option(
        [128],
        help="mlp: hidden layer widths, e.g. 256,128",
        group="model",
        trajectory=True,
        metavar="W[,W...]",
        applies=_MLP,
    )
    dropout: float = option(
        0.0,
        help="mlp: dropout probability of hidden units",
        group="model",
        trajectory=True,
        valid=Range(0, 1, high_open=True),
        applies=_MLP,
    )
    overlap: bool = option(
        True,
        help="mlp with allreduce: one Allreduce after backpropagation, not buckets during it",
        group="strategy",
        applies=_OVERLAPPABLE,
    )
    bucket_mb: float = option(
        1.0,
        help="mlp: gradient bucket size (MiB)",
        group="strategy",
        valid=POSITIVE,
        applies=_OVERLAPPABLE,
    )
    accumulate: int = option(
        1,
        help="micro-batches whose gradients are summed before communicating",
        group="strategy",
        trajectory=True,
        metavar="K",
        valid=AT_LEAST_1,
    )
    model_parallel: int = option(
        1,
        help="mlp: split every hidden layer over M ranks (a P/M x M grid)",
        group="strategy",
        metavar="M",
        valid=AT_LEAST_1,
    )
    server_computes: bool = option(
        False,
        help="ps-sync/ps-async: the server (rank 0) also computes on a share of the rows",
        group="strategy",
        trajectory=True,
        applies=when("strategy", "ps-sync", "ps-async"),
    )
    sync_every: int = option(
        8,
        help="local-sgd: local steps per average",
        group="strategy",
        trajectory=True,
        metavar="H",
        valid=AT_LEAST_1,
        applies=when("strategy", "local-sgd"),
    )
    max_staleness: int | None = option(
        None,
        help="ps-async: most server versions a gradient may lag; none means unbounded",
        group="strategy",
        trajectory=True,
        metavar="S",
        valid=NON_NEGATIVE,
        applies=when("strategy", "ps-async"),
    )
    exchange: str = option(
        "auto",
        help="allreduce: how gradients travel; sparse sends the (index, value) pairs of the "
        "touched coordinates, auto picks per step by each one's measured alpha-beta cost "
        "and local work",
        group="strategy",
        choices=("auto", "dense", "sparse"),
        applies=when("strategy", "allreduce"),
    )
    servers: int = option(
        1,
        help="ps-sync/ps-async: server ranks, each owning a contiguous key range of the parameters",
        group="strategy",
        metavar="K",
        valid=AT_LEAST_1,
        applies=when("strategy", "ps-sync", "ps-async"),
    )
    trees: int = option(
        100,
        help="forest: trees, one an epoch of the run record",
        group="trees",
        valid=AT_LEAST_1,
        applies=_FOREST,
    )
    rounds: int = option(
        100,
        help="gbt: boosting rounds (a tree per class and round), one an epoch of the run record",
        group="trees",
        valid=AT_LEAST_1,
        applies=_GBT,
    )
    max_depth: int = option(
        6,
        help="forest, gbt: the deepest level a tree grows to (the root is depth 0)",
        group="trees",
        trajectory=True,
        valid=Range(1, 30),
        applies=_TREES,
    )
    max_leaves: int | None = option(
        None,
        help="forest, gbt: most leaves a tree has (level by level, the best gains first); "
        "none: only --max-depth limits it",
        group="trees",
        trajectory=True,
        valid=Range(2),
        applies=_TREES,
    )
    min_rows_leaf: int = option(
        1,
        help="forest, gbt: fewest training rows in a leaf (a bagged forest counts rows drawn)",
        group="trees",
        trajectory=True,
        valid=AT_LEAST_1,
        applies=_TREES,
    )
    min_hessian_leaf: float = option(
        1e-3,
        help="gbt: smallest sum of the loss's second derivative in a leaf",
        group="trees",
        trajectory=True,
        valid=NON_NEGATIVE,
        applies=_GBT,
    )
    features_per_node: str = option(
        "auto",
        help="forest: features tried at each node: sqrt, log2, all, a fraction such as 0.3, "
        "or auto (sqrt for classification, all for regression)",
        group="trees",
        trajectory=True,
        metavar="K",
        applies=_FOREST,
    )
    criterion: str = option(
        "gini",
        help="forest classification: the impurity a split decreases (regression: variance)",
        group="trees",
        trajectory=True,
        choices=("gini", "entropy"),
        applies=_FOREST,
    )
    bootstrap: bool = option(
        True,
        help="forest: bag each tree by a Poisson(1) weight per row; --no-bootstrap: every row once",
        group="trees",
        trajectory=True,
        applies=_FOREST,
    )
    subsample: float = option(
        1.0,
        help="gbt: fraction of the rows each round's trees are grown from",
        group="trees",
        trajectory=True,
        valid=Range(0, 1, low_open=True),
        applies=_GBT,
    )
    colsample: float = option(
        1.0,
        help="gbt: fraction of the features each tree may split on",
        group="trees",
        trajectory=True,
        valid=Range(0, 1, low_open=True),
        applies=_GBT,
    )
    max_bins: int = option(
        255,
        help="forest, gbt: most quantile bins per feature (rows are stored as uint8 bin ids)",
        group="trees",
        trajectory=True,
        valid=Range(2, 256),
        applies=_TREES,
    )
    early_stop: int = option(
        0,
        help="gbt: stop after K rounds without a lower --test-data loss (0: never); the model "
        "keeps every round trained",
        group="trees",
        metavar="K",
        valid=NON_NEGATIVE,
        applies=_GBT,
    )
    timeline: bool = option(
        False,
        help="write a per-rank step timeline, RUNDIR/timeline.json "
        "(Chrome trace format; opens in Perfetto)",
        group="output",
    )

    def __post_init__(self) -> None:
        self.validate()

    @property
    def loop_epochs(self) -> tuple[int, str]:
        """How many epochs the training loop runs, and the flag that sets it: ``--trees``
        for a forest (a tree an epoch), ``--rounds`` for boosting (a round an epoch),
        ``--epochs`` otherwise."""
        if self.model == "forest":
            return self.trees, "--trees"
        if self.model == "gbt":
            return self.rounds, "--rounds"
        return self.epochs, "--epochs"

    def validate(self) -> None:
        """Raise ConfigError for values no run can use: a wrong type, a value outside its
        choices or its ``valid`` range (:func:`option`), or a :data:`CONTRADICTIONS` row."""
        self._check_types()
        for spec in fields(self):
            allowed, value = spec.metadata["choices"], getattr(self, spec.name)
            if allowed is not None and value not in allowed:
                raise ConfigError(
                    f"{flag_of(spec.name)} {value!r} is not one of {', '.join(allowed)}"
                )
            valid = spec.metadata["valid"]
            if valid is not None and value is not None and value not in valid:
                finite = "" if math.isfinite(value) else "a finite number "
                raise ConfigError(
                    f"{flag_of(spec.name)} must be {finite}{valid.describe()}, got {value!r}"
                )
        if not self.hidden or not all(
            isinstance(width, int) and not isinstance(width, bool) and width >= 1
            for width in self.hidden
        ):
            raise ConfigError(f"--hidden must list positive layer widths, got {self.hidden}")
        _check_features_per_node(self.features_per_node)
        for contradiction in CONTRADICTIONS:
            if contradiction.holds(self):
                raise ConfigError(contradiction.message)

    def ignored_options(self) -> list[str]:
        """One warning per option set to a non-default value where this configuration
        does not read it (its ``applies``, :func:`option`): the run is well defined, but
        the user likely expected the option to act."""
        warnings = []
        for spec in fields(self):
            applies, value = spec.metadata["applies"], getattr(self, spec.name)
            if applies is None or value == default_of(spec.name) or applies.holds(self):
                continue
            warnings.append(
                f"{_given_flag(spec, value)} has no effect here: it is used only {applies.text}"
            )
        return warnings

    def _check_types(self) -> None:
        """Values from a config file arrive untyped: check each against its field.

        The message starts with the option's flag (the CLI adds the config file's name
        when the value came from one) and says what the value must be in the file's
        own terms: ``true or false``, a list of widths, else the Python type.
        """
        for spec in fields(self):
            value = getattr(self, spec.name)
            allowed = _TYPES[spec.type]
            if isinstance(value, bool) and bool not in allowed:
                allowed = ()  # True is an int to Python, not to a user
            if not isinstance(value, allowed):
                if spec.type == "bool":
                    kinds = "true or false"
                elif spec.type == "list[int]":
                    kinds = "a list of widths, such as [256, 128]"
                else:
                    named = _TYPES[spec.type]
                    kinds = " or ".join(t.__name__ for t in named if t is not type(None))
                raise ConfigError(f"{flag_of(spec.name)} must be {kinds}, got {value!r}")
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, spec.name, float(value))

    def to_dict(self) -> dict:
        """Every option by name, as ``run.json`` stores the config."""
        return asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        """The option names, in declaration order (the keys a config file may use)."""
        return [f.name for f in fields(cls)]

    def trajectory_fingerprint(self) -> dict:
        """``{name: value}`` of the options that can change this run's trajectory.

        A checkpoint stores it, and ``--resume`` refuses a checkpoint whose fingerprint
        differs: continuing it under other values would give neither run's result. Which
        options count is each field's ``trajectory`` metadata (see :func:`option`).
        """
        return {
            spec.name: getattr(self, spec.name)
            for spec in fields(self)
            if _decides_trajectory(spec, self)
        }

    def subset(self, names) -> types.SimpleNamespace:
        """A read-only namespace of the options ``names`` alone.

        A strategy or model gets its own options this way instead of the whole config,
        so what it depends on is visible where it is built.

        Parameters
        ----------
        names : iterable of str
            Option names (fields of TrainConfig).

        Raises
        ------
        KeyError
            For a name that is not an option.
        """
        names = list(names)
        unknown = sorted(set(names) - set(self.keys()))
        if unknown:
            raise KeyError(f"not train options: {', '.join(unknown)}")
        return Options(**{name: getattr(self, name) for name in names})


class Options(types.SimpleNamespace):
    """The read-only namespace :meth:`TrainConfig.subset` returns."""

    def __setattr__(self, name, value):
        raise AttributeError(f"options are read-only: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"options are read-only: cannot delete {name!r}")


#: Option combinations no run can honour: :meth:`TrainConfig.validate` refuses them.
#: (A strategy's or layout's own limits, such as rank counts, are its ``check``.)
CONTRADICTIONS = (
    Contradiction(
        lambda config: config.resume and config.overwrite,
        "--resume continues the run in --out, --overwrite replaces it: pass one of them",
    ),
    Contradiction(
        lambda config: (
            config.model not in TREE_MODELS
            and config.optimizer in FULL_BATCH_ONLY
            and config.batch_size is not None
        ),
        f"--optimizer {'/'.join(FULL_BATCH_ONLY)} takes full-batch steps: drop --batch-size, "
        "or use sgd, momentum or adam for mini-batches",
    ),
    Contradiction(
        lambda config: config.model in TREE_MODELS and config.strategy not in TREE_STRATEGIES,
        f"--model forest and gbt combine histograms: use --strategy {' or '.join(TREE_STRATEGIES)}",
    ),
    Contradiction(
        lambda config: config.model not in TREE_MODELS and config.strategy not in STRATEGIES,
        "--strategy reduce-scatter combines the histograms of --model forest or gbt; the "
        f"gradient models use {', '.join(STRATEGIES)}",
    ),
    Contradiction(
        lambda config: config.model in TREE_MODELS and config.batch_size is not None,
        "--model forest and gbt grow each tree from all training rows: drop --batch-size",
    ),
    Contradiction(
        lambda config: config.model == "gbt" and config.early_stop and not config.test_data,
        "--early-stop watches the --test-data loss: give --test-data",
    ),
)


def _check_features_per_node(value: str) -> None:
    """ConfigError unless ``value`` is one of :data:`FEATURES_PER_NODE` or a fraction in
    (0, 1]."""
    if value in FEATURES_PER_NODE:
        return
    try:
        fraction = float(value)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1:  # also false for nan
        raise ConfigError(f"--features-per-node must be {', '.join(FEATURES_PER_NODE)} or a "
                          f"fraction in (0, 1], got {value!r}")  # fmt: skip


def _given_flag(spec, value) -> str:
    """How the user set field ``spec`` to ``value``: ``--nesterov``, ``--no-overlap``,
    ``--momentum 0.5``, ``--hidden 64,32``."""
    if spec.type == "bool":
        return flag_of(spec.name) if value else "--no-" + flag_of(spec.name)[2:]
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"{flag_of(spec.name)} {value}"


def default_of(name: str):
    """The default value of option ``name`` (a fresh copy for list defaults)."""
    spec = next(spec for spec in fields(TrainConfig) if spec.name == name)
    return spec.default_factory() if spec.default is MISSING else spec.default


def _decides_trajectory(spec, config: TrainConfig) -> bool:
    """Whether the option of field ``spec`` decides the trajectory of ``config``'s run."""
    rule = spec.metadata["trajectory"]
    return rule(config) if callable(rule) else rule


def read_toml(path, what: str, error: type[Exception] = ConfigError) -> dict:
    """The TOML file at ``path`` as a dict; ``error`` naming ``what`` if it is not a
    readable regular file (checked before opening: a FIFO would block) or not TOML."""
    check_input_file(path, what, error, expected="a TOML file")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from exc
