"""``mpigd sweep``: train a grid of configurations at once, one group of ranks per config.

Task parallelism over data parallelism. :func:`mpigd.comm.split` cuts the world into G groups
of consecutive ranks (sizes differ by at most one); config i of the grid is trained by
group ``i mod G``, each group working through its configs one after another,
data-parallel on its own communicator, into its own run directory ``DIR/cfg-NNN``. The
groups' results are then gathered to world rank 0, which writes ``DIR/sweep.csv`` and
``DIR/sweep.json`` and names the best config: the lowest final ``test_loss`` when the
grid has test data, else the lowest final ``train_loss``.

The grid file (TOML) holds the ``mpigd train`` options every config shares at top
level, and in ``[grid]`` the lists whose Cartesian product (in file order) gives the
configs::

    data = "build/synth/train"
    test_data = "build/synth/test"
    model = "logreg"
    optimizer = "gd"
    epochs = 20
    [grid]
    lr = [0.1, 0.5, 1.0]
    l2 = [0.0, 1e-4]

A config that fails is a result, not an error: its row says so and the other configs go
on. A config *diverged* when its final ``train_loss`` (or ``test_loss``) is not finite,
or its final ``train_loss`` ends above the first epoch's: a run that the divergence check
stops is ``failed``, one that completes with a loss risen to 1e34 is ``diverged``, and
neither is ever the best. The second rule is for models whose epochs descend the loss
(gradient steps, boosting rounds); a forest's epoch adds an independent tree to an
average (:data:`AVERAGED_MODELS`), whose train loss may rise by chance, so only a loss
that is not finite makes a forest diverged. A sweep that trains exits 2 only if no
config completed without diverging. A stop signal ends every group at its next step
(checkpoint written) and, after the table of what finished, the job exits with status 75.

Without groups: ``--index I`` trains config I alone on all ranks (one task of a Slurm
job array), printing a line as it starts and its row as it ends; ``--collect`` builds
the table from the run records already in DIR; ``--list`` prints the configs.
``--collect`` checks that the sweep is done: it names the best among the completed
configs and lists every other config with its status (``missing``: no run record), and
exits 0 only when every config of the grid completed without diverging, 2 otherwise.

Rerunning: a config's run directory that holds a run is refused, as by ``train``, unless
the sweep passes ``--resume`` (continue each config from its checkpoint; a config
without one starts fresh, one that completed stays as it is) or ``--overwrite`` (start
each config over) to every config it trains. ``slurm/sweep-array.sbatch`` always passes
``--resume``, so a requeued or resubmitted task continues where it stopped.

The table files are the sweep's only files outside the run directories, and a sweep
never replaces a file it did not write: sweep.json says ``"written_by": "mpigd sweep"``,
and a sweep (or ``--collect``) refuses, before it trains or writes anything, a DIR that
is not a directory, or one whose sweep.json lacks that mark or whose sweep.csv has no
such sweep.json beside it (both are then someone else's). ``--collect`` also refuses a
DIR that holds no sweep (neither the grid's run directories nor a sweep.json), rather
than create one. Both files are replaced atomically, sweep.json first: a crash between
the two leaves a marked sweep.json, so the next sweep may still replace either.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from pathlib import Path

from mpigd import comm as mpi
from mpigd import preemption
from mpigd.comm import RankInfo, collectively
from mpigd.config import TrainConfig, read_toml
from mpigd.errors import CollectiveError, ConfigError
from mpigd.preemption import Interrupted, Preempted
from mpigd.record import read_run
from mpigd.record.atomic import replace_atomically

TABLE_FIELDS = (
    "index",
    "group",
    "ranks",
    "status",
    "final_train_loss",
    "test_loss",
    "test_accuracy",
    "epochs_run",
    "train_s",
    "error",
    "run_dir",
)
#: Models whose epochs average independent members instead of descending the loss: a
#: train loss above the first epoch's is no sign of divergence there (:func:`divergence`).
AVERAGED_MODELS = ("forest",)
#: The mark in sweep.json that lets a later sweep replace it and the sweep.csv beside it.
WRITTEN_BY = "mpigd sweep"


def read_grid(
    path: str, out: str, forced: dict | None = None, progress: str | None = "quiet"
) -> tuple[list[dict], list[TrainConfig]]:
    """The grid's configs: per config its grid values, and its full TrainConfig.

    ``forced`` are train options the sweep's command line sets for every config
    (``resume``, ``overwrite``), over the file's; ``progress`` the console output of a
    config whose file sets none (None: the train default).

    Raises ConfigError, naming the file, for an unreadable file, a ``grid`` that is not
    a table, an option given twice (``batch-size`` and ``batch_size`` are one), unknown
    keys, a grid value that is not a non-empty list, a key the sweep sets itself
    (``out``), or a config that ``mpigd train`` would refuse (naming the config too).
    """
    raw = read_toml(path, "grid file")
    table = raw.pop("grid", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"grid file {path}: 'grid' is {_toml_kind(table)}; it must be the table [grid], "
            "holding for each option to vary the list of its values (lr = [0.1, 0.5])"
        )
    grid = _option_names(table, f"grid file {path}: [grid]")
    fixed = _option_names(raw, f"grid file {path}:")
    unknown = sorted((set(grid) | set(fixed)) - set(TrainConfig.keys()))
    if unknown:
        raise ConfigError(f"grid file {path}: unknown train options {', '.join(unknown)}")
    if "out" in grid or "out" in fixed:
        raise ConfigError(f"grid file {path}: leave out 'out'; sweep --out names the runs")
    if set(grid) & set(fixed):
        raise ConfigError(f"grid file {path}: {', '.join(set(grid) & set(fixed))} set twice")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid file {path}: [grid] {key} must be a non-empty list")
    if progress is not None:
        fixed.setdefault("progress", progress)
    values = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    configs = []
    for i, combo in enumerate(values):
        try:
            configs.append(
                TrainConfig(**{**fixed, **combo, **(forced or {}), "out": str(run_dir(out, i))})
            )
        except ConfigError as exc:
            where = f"cfg-{i:03d} {_settings(combo, list(combo))}".rstrip()
            raise ConfigError(f"grid file {path}, {where}: {exc}") from None
    return values, configs


def _option_names(table: dict, where: str) -> dict:
    """``table`` with its keys as train option names (``-`` read as ``_``); ConfigError
    (``where`` first) for an option given under both spellings, which would otherwise
    keep one of the two values without a word."""
    options, spelled = {}, {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in options:
            raise ConfigError(f"{where} {name} set twice (as {spelled[name]} and {key})")
        options[name], spelled[name] = value, key
    return options


def _toml_kind(value) -> str:
    """What a TOML value is, in words, for a message about a misplaced one."""
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            return "an array of tables ([[grid]])"
        return "an array"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return next((words for kind, words in kinds.items() if isinstance(value, kind)), "a date")


def run_dir(out: str, index: int) -> Path:
    """The run directory of config ``index``."""
    return Path(out) / f"cfg-{index:03d}"


def group_of(rank: int, size: int, groups: int) -> int:
    """The group of world rank ``rank``: consecutive blocks, sizes differing by at most 1."""
    return rank * groups // size


def run_sweep(
    world: RankInfo, grid_path: str, out: str, groups: int = 1, hooks=(), forced=None
) -> list[dict]:
    """Collective on ``world``: train every config; return the table (on every rank).

    World rank 0 first checks that ``out`` may take the table (:func:`check_out`: a
    ConfigError on every rank, before anything is trained), then writes ``sweep.csv``
    and ``sweep.json``. Raises ``Preempted`` on every rank, after the table, if a stop
    signal ended any group early. ``hooks`` are added to every config's run (see
    :func:`mpigd.run.train`); ``forced`` train options (``{"resume": True}``) to every
    config (:func:`read_grid`).
    """
    values, configs = collectively(
        world.comm, lambda: _checked(grid_path, out, groups, world, forced)
    )
    color = group_of(world.rank, world.size, groups)
    group = mpi.split(world, color)
    try:
        with preemption.listening():  # a signal between two configs still stops the next
            mine = _train_group(group, color, groups, values, configs, hooks)
    finally:
        mpi.free(group)
    everyone = mpi.gather_everywhere(world.comm, mine)
    table = sorted(itertools.chain(*everyone), key=lambda row: row["index"])

    def write() -> None:
        if world.is_root:
            try:  # absent when no config got as far as its run directory
                Path(out).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the sweep's directory {out}: {exc}") from None
            write_table(table, out, list(values[0]), configs[0].test_data is not None)

    collectively(world.comm, write)
    stopped = {row["status"] for row in table} & {"preempted", "interrupted"}
    if stopped:
        stop = Interrupted if "interrupted" in stopped else Preempted
        raise stop("the sweep was stopped by a signal; see sweep.csv for what finished")
    if not any(row["status"] == "completed" for row in table):
        raise CollectiveError(
            f"no config of the sweep completed without diverging; see {out}/sweep.csv"
        )
    return table


def run_one(world: RankInfo, grid_path: str, out: str, index: int, forced=None) -> None:
    """Collective on ``world``: train config ``index`` of the grid on all ranks.

    Its console output is the grid's ``progress`` (default: the train default, so that
    a job array task's log shows the epochs); world rank 0 prints a line as it starts
    and the config's table row as it ends. ``forced`` as for :func:`run_sweep`.
    """
    from mpigd.run import train

    def pick():
        values, configs = read_grid(grid_path, out, forced, progress=None)
        if world.is_root:
            _check_directory(out)
        if not 0 <= index < len(configs):
            raise ConfigError(f"--index {index}: the grid has configs 0 to {len(configs) - 1}")
        return values[index], configs[index]

    values, config = collectively(world.comm, pick)
    name = f"cfg-{index:03d} {_settings(values, list(values))}"
    if world.is_root:
        ranks = f"{world.size} rank" + ("s" if world.size > 1 else "")
        print(f"{name}: training on {ranks} into {config.out}", flush=True)
    train(config, world)
    if world.is_root:
        row = result_row(index, values, config.out)
        metric = "test_loss" if config.test_data is not None else "final_train_loss"
        print(f"{name}: {_outcome(row, metric)}", flush=True)


def collect(world: RankInfo, grid_path: str, out: str) -> list[dict]:
    """Collective: the table of the run records in ``out``, without training.

    World rank 0 reads the records and writes the table as a sweep does; other ranks
    return an empty list. Raises ConfigError on every rank, creating and changing
    nothing, when ``out`` holds no sweep or a table that is not an mpigd sweep's
    (:func:`check_out`); CollectiveError on every rank, after the table, when a config
    is missing or did not complete without diverging (module docstring).
    """

    def check():
        values, configs = read_grid(grid_path, out)
        if world.is_root:
            check_out(out, [config.out for config in configs], collecting=True)
        return values, configs

    values, configs = collectively(world.comm, check)

    def write():
        if not world.is_root:
            return [], None
        rows = [result_row(i, values[i], config.out) for i, config in enumerate(configs)]
        write_table(rows, out, list(values[0]), test_metric=configs[0].test_data is not None)
        return rows, _unfinished(rows)

    table, unfinished = collectively(world.comm, write)
    unfinished = mpi.from_root(world.comm, unfinished)
    if unfinished:
        raise CollectiveError(f"not every config completed ({unfinished}); see {out}/sweep.csv")
    return table


def list_configs(grid_path: str, out: str) -> list[dict]:
    """Every config's index, grid values and run directory."""
    values, configs = read_grid(grid_path, out)
    return [{"index": i, **values[i], "out": c.out} for i, c in enumerate(configs)]


def _checked(grid_path: str, out: str, groups: int, world: RankInfo, forced):
    if not 1 <= groups <= world.size:
        raise ConfigError(f"--groups {groups} must be between 1 and the {world.size} ranks")
    values, configs = read_grid(grid_path, out, forced)
    if world.is_root:
        check_out(out, [config.out for config in configs], collecting=False)
    return values, configs


def check_out(out: str, run_dirs: list[str], collecting: bool) -> None:
    """ConfigError unless the sweep may write its table into ``out``; reads only.

    ``out`` must be a directory, or (for a sweep that trains, which creates it) absent;
    its table files must be absent or an mpigd sweep's (:func:`_check_tables`). For
    ``collecting``, ``out`` must hold a sweep: a sweep.json or one of ``run_dirs``, the
    grid's run directories; else the command would create a table of nothing.
    """
    if collecting and not os.path.lexists(out):
        raise ConfigError(f"no sweep in {out}: it does not exist")
    _check_directory(out)
    if not os.path.lexists(out):
        return
    marked = _check_tables(Path(out))
    if collecting and not marked and not any(os.path.lexists(path) for path in run_dirs):
        raise ConfigError(
            f"no sweep in {out}: it holds no sweep.json and none of the grid's run "
            f"directories {Path(run_dirs[0]).name} to {Path(run_dirs[-1]).name}"
        )


def _check_directory(out: str) -> None:
    """ConfigError if ``out`` exists (a broken symbolic link too) and is not a directory,
    or is absent and cannot be created, its nearest existing parent not being one."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} exists and is not a directory; name the sweep's directory")
    parent = Path(out).absolute().parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not os.path.isdir(parent):
        raise ConfigError(f"--out {out}: {parent} is not a directory; name the sweep's directory")


def _check_tables(directory: Path) -> bool:
    """Whether ``directory`` holds an mpigd sweep's sweep.json; ConfigError if a table file
    there may not be replaced: not a regular file (a symbolic link, a directory), a
    sweep.json without the :data:`WRITTEN_BY` mark, or a sweep.csv without a marked
    sweep.json beside it. Reads only; the file's type is checked before it is opened,
    as a FIFO would block."""
    summary, table = directory / "sweep.json", directory / "sweep.csv"
    for path in (summary, table):
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
            raise ConfigError(
                f"{path} is not a file an mpigd sweep wrote (not a regular file), and the "
                "sweep would replace it: move it away or choose another --out"
            )
    marked = False
    if summary.exists():
        try:
            written = json.loads(summary.read_text())
        except OSError as exc:
            raise ConfigError(
                f"cannot read {summary} to tell whether an mpigd sweep wrote it: {exc}"
            ) from None
        except ValueError:
            written = None
        marked = isinstance(written, dict) and written.get("written_by") == WRITTEN_BY
        if not marked:
            raise ConfigError(
                f'{summary} is not an mpigd sweep\'s (it has no "written_by": '
                f'"{WRITTEN_BY}"), and the sweep would replace it: move it away or choose '
                "another --out"
            )
    if table.exists() and not marked:
        raise ConfigError(
            f"{table} is not an mpigd sweep's (no sweep.json of one beside it), and the "
            "sweep would replace it: move it away or choose another --out"
        )
    return marked


def _train_group(ranks: RankInfo, group: int, groups: int, values, configs, hooks) -> list[dict]:
    """Train this group's configs in turn; the group's rank 0 returns their rows."""
    from mpigd.run import train

    rows = []
    for index in range(group, len(configs), groups):
        error, status = None, None
        try:
            train(configs[index], ranks, hooks=hooks)
        except Preempted as exc:
            error, status = str(exc), exc.status
        except CollectiveError as exc:
            error, status = str(exc), "failed"
        if ranks.is_root:
            row = result_row(index, values[index], configs[index].out, status, error)
            rows.append(dict(row, group=group, ranks=ranks.size))
        if status in ("preempted", "interrupted"):
            break
    return rows


def result_row(index: int, values: dict, directory: str, status=None, error=None) -> dict:
    """One table row for config ``index``, from its run record (``missing`` if none).

    A run that ended in ``error`` gets that message and ``status``, and no results: its
    directory may hold an older run's. Read from the record, a run killed outright is
    ``died`` (:func:`mpigd.record.read_run`), a run that did not complete has its
    ``stop_reason`` as the error, and a completed run whose loss diverged
    (:func:`divergence`) is ``diverged``, with the reason as the error.
    """
    row = {"index": index, **values, "run_dir": directory, "error": error}
    if error is not None:
        return dict(row, status=status)
    try:
        run, rows = read_run(directory)
    except (OSError, ValueError):
        return dict(row, status=status or "missing")
    epochs = [_numbers(epoch) for epoch in rows if isinstance(epoch, dict)]
    last = epochs[-1] if epochs else {}
    times = [epoch.get("time_s") for epoch in epochs]
    status = status or run.get("status")
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    descends = config.get("model") not in AVERAGED_MODELS
    error = run.get("stop_reason") if status != "completed" else divergence(epochs, descends)
    return dict(
        row,
        status="diverged" if status == "completed" and error else status,
        error=error,
        ranks=run.get("world_size"),
        final_train_loss=last.get("train_loss"),
        test_loss=last.get("test_loss"),
        test_accuracy=last.get("test_accuracy"),
        epochs_run=len(epochs),
        train_s=sum(times) if None not in times else None,
    )


#: The fields of a metrics row that the table reads as numbers.
_NUMERIC = ("epoch", "train_loss", "test_loss", "test_accuracy", "time_s")


def _numbers(epoch: dict) -> dict:
    """A metrics row with the numbers the table reads (``epoch``, the losses, the
    accuracy, ``time_s``) dropped where they are not numbers: a row written by hand or
    by another version then reads as one lacking them, and its cells are left empty."""
    return {
        key: value
        for key, value in epoch.items()
        if key not in _NUMERIC or (isinstance(value, int | float) and not isinstance(value, bool))
    }


def divergence(epochs: list[dict], descends: bool = True) -> str | None:
    """Why a run's metrics show it diverged, or None: a final ``train_loss`` or
    ``test_loss`` that is not finite, or, when ``descends`` (the epochs descend the loss:
    not a forest's, :data:`AVERAGED_MODELS`), a final ``train_loss`` above the first
    epoch's."""
    if not epochs:
        return None
    first, last = epochs[0].get("train_loss"), epochs[-1]
    for key in ("train_loss", "test_loss"):
        value = last.get(key)
        if value is not None and not math.isfinite(value):
            return f"diverged: the final {key} is {value}"
    final = last.get("train_loss")
    if descends and first is not None and final is not None and final > first:
        return (
            f"diverged: train_loss rose from {first:.6g} (epoch {epochs[0].get('epoch')}) "
            f"to {final:.6g} (epoch {last.get('epoch')})"
        )
    return None


def best_row(table: list[dict], test_metric: bool) -> dict | None:
    """The completed (not diverged) row with the lowest final test (or train) loss; None
    if none."""
    key = "test_loss" if test_metric else "final_train_loss"
    done = [row for row in table if row["status"] == "completed" and row.get(key) is not None]
    return min(done, key=lambda row: row[key], default=None)


def write_table(table: list[dict], out: str, grid_keys: list[str], test_metric: bool):
    """Write ``sweep.csv`` and ``sweep.json`` into ``out`` and print the table, the
    configs that did not complete (by status) and the best of those that did.

    Returns the best row (None if no config completed without diverging). Checks the
    table files again first (:func:`_check_tables`: ConfigError, nothing written), as
    a user may have put their own there while the configs trained; then replaces
    sweep.json and sweep.csv, in that order, each atomically.
    """
    _check_tables(Path(out))
    best = best_row(table, test_metric)
    metric = "test_loss" if test_metric else "final_train_loss"
    done = sum(row["status"] == "completed" for row in table)
    summary = {
        "written_by": WRITTEN_BY,
        "metric": metric,
        "best": best,
        "completed": done,
        "not_completed": [
            {"index": r["index"], "status": r["status"]}
            for r in table
            if r["status"] != "completed"
        ],  # fmt: skip
        "configs": table,
    }

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["index", *grid_keys, *TABLE_FIELDS[1:]])
            writer.writeheader()
            writer.writerows(table)

    summary_text = json.dumps(summary, indent=2) + "\n"
    try:
        replace_atomically(Path(out) / "sweep.json", lambda tmp: tmp.write_text(summary_text))
        replace_atomically(Path(out) / "sweep.csv", write_csv)
    except OSError as exc:
        raise ConfigError(f"cannot write the sweep's table into {out}: {exc}") from None
    for row in table:
        print(f"cfg-{row['index']:03d} {_settings(row, grid_keys)}: {_outcome(row, metric)}")
    if done < len(table):
        print(f"not completed, {len(table) - done} of {len(table)}: {_unfinished(table)}")
    if best is None:
        print(f"no config completed without diverging; table in {out}/sweep.csv")
    else:
        among = "" if done == len(table) else f", among the {done} of {len(table)} completed"
        print(
            f"best: cfg-{best['index']:03d} {_settings(best, grid_keys)} "
            f"({metric} {best[metric]:.6g}{among})"
        )
    return best


def _unfinished(table: list[dict]) -> str:
    """The configs that did not complete, by status: ``missing cfg-001, cfg-004;
    diverged cfg-002`` (empty if every config completed)."""
    by_status: dict[str, list[str]] = {}
    for row in table:
        if row["status"] != "completed":
            by_status.setdefault(row["status"], []).append(f"cfg-{row['index']:03d}")
    return "; ".join(f"{status} {', '.join(names)}" for status, names in by_status.items())


def _settings(row: dict, grid_keys: list[str]) -> str:
    return " ".join(f"{key}={row[key]}" for key in grid_keys)


def _outcome(row: dict, metric: str) -> str:
    """``completed, test_loss 0.31`` or ``diverged, test_loss 1e+34 (why)``."""
    why = f" ({row['error']})" if row.get("error") else ""
    return f"{row['status']}, {metric} {row.get(metric)}{why}"
