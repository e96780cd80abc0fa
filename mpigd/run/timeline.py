"""The per-rank step timeline (``--timeline``): ``RUNDIR/timeline.json``, a Chrome trace.

The trace is in the Chrome trace event format (the JSON object form), which Perfetto
(ui.perfetto.dev) and chrome://tracing open. Like Horovod's timeline it shows where each
rank's time went; it also shows which rank everyone waited for.

- One process per rank: ``pid`` is the rank, ``tid`` 0, named ``rank r`` (and sorted)
  by ``"ph": "M"`` metadata events.
- Complete events (``"ph": "X"``) with ``ts`` and ``dur`` in microseconds (nanosecond
  resolution). Every rank measures from the instant it leaves one barrier at the run's
  start, so ranks line up to within that barrier's exit skew (microseconds on one node,
  more across nodes); the trace's zero is its earliest event (the data read before
  that barrier), and the barrier lies at ``otherData.origin_us``.
- ``cat`` is the kind of event: ``epoch`` (args ``epoch``), ``step`` (name ``step N``,
  args ``step``, ``epoch``), ``compute``, ``comm`` (named by the call, ``Allreduce``,
  ``Iallreduce bucket 2``; args ``nbytes``, the bytes this rank sent), ``io`` (``read
  rows``: this rank's initial read of its rows), ``eval`` (``evaluation``,
  ``train_loss``), ``checkpoint``, ``span`` (any other labelled span) and ``wait``:
  phases nest as they ran (a comm inside compute).
- Waiting, found when rank 0 merges: in every interval of the run (a step, or the time
  after a step: the ``train_loss`` pass, the evaluation), if every rank made the same
  sequence of collective calls (point-to-point ones left out), the k-th calls of all
  ranks are one collective, and the rank that started it last is the one the others
  waited for. Each other rank gets a ``wait`` slice inside its call, from its own start
  to the last rank's start (cut at the call's end), args ``waited_for_rank``; every
  matched call gets args ``last_rank``, every matched step args ``last_rank`` (the rank
  the others waited for longest in it) and ``wait_us`` (this rank's wait in it). Where
  the sequences differ (a parameter server's messages) nothing is matched.
- ``otherData``: ranks, run status, ``origin_us``, ``last_rank_steps`` (per rank, the
  steps in which the others waited for it longest) and, when some ranks' events never
  reached rank 0, ``missing_ranks`` and a ``note``.

How. :class:`TimelineHook` attaches a list to the run's timer (``PhaseTimer.trace``),
to which every phase and span appends one tuple when it ends, and marks step starts and
epoch ends; that is the whole cost while training (no JSON, no files). When the run
ends every rank converts its own records and writes ``RUNDIR/timeline/rank-NNNNN.json``;
after a barrier, rank 0 merges the files of this run into ``timeline.json`` (written
atomically) and removes them and the then empty directory. Memory: some 150 bytes per
recorded event, kept until the run ends.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from bisect import bisect_right
from collections import defaultdict
from pathlib import Path

from mpigd import comm as mpi
from mpigd.record import TIMELINE_FILE
from mpigd.record.atomic import replace_atomically
from mpigd.run.hooks import Hook

TRACE_FILE = TIMELINE_FILE
#: Where each rank leaves its events for rank 0, inside the run directory.
RANK_DIR = "timeline"
#: Span categories that run between steps: a step ends where one of them starts.
BETWEEN_STEPS = frozenset({"eval", "checkpoint"})
#: Calls (the first word of a comm event's name) that are point-to-point messages,
#: never part of a collective that all ranks make.
POINT_TO_POINT = frozenset({"Send", "Recv", "Isend", "Irecv", "Ssend", "Sendrecv", "Probe"})


class TimelineHook(Hook):
    """Records this rank's phases, spans, steps and epochs; writes the trace at the end.

    Every rank holds one; rank 0 alone merges and writes ``timeline.json``. It marks a
    step's start in ``before_step``, so it belongs after the hooks that checkpoint there
    (:class:`~mpigd.run.hooks.CheckpointPolicy`): their checkpoint then lies between two
    steps, not at the head of the next.
    """

    def __init__(self) -> None:
        #: The timer's records (see ``PhaseTimer.trace``): perf_counter seconds.
        self.records: list[tuple] = []
        #: ``(global step, epoch, perf_counter seconds)`` at each step's start.
        self.steps: list[tuple[int, int, float]] = []
        #: ``(epoch, perf_counter seconds)`` at each epoch's end.
        self.epoch_ends: list[tuple[int, float]] = []
        #: perf_counter seconds at the common origin; None until the run has started.
        self.origin_s: float | None = None
        #: Names this run's rank files (the same on every rank), so that rank 0 never
        #: merges a file left by an earlier run in the same directory.
        self.token: str | None = None

    def run_started(self, run) -> None:
        comm = run.ranks.comm
        self.token = mpi.from_root(comm, uuid.uuid4().hex if run.ranks.is_root else None)
        # The origin is taken on leaving the second barrier: the first may carry
        # connection set-up and release the ranks unevenly.
        mpi.barrier(comm)
        mpi.barrier(comm)
        self.origin_s = time.perf_counter()
        self.records.append(("io", "read rows", *run.data.load_interval, {}))
        run.timer.trace = self.records

    def before_step(self, run) -> None:
        self.steps.append((run.state.global_step, run.state.epoch, time.perf_counter()))

    def epoch_ended(self, run, row: dict) -> None:
        self.epoch_ends.append((row["epoch"], time.perf_counter()))

    def run_ended(self, run, status: str) -> None:
        """Collective: each rank writes its file; rank 0 merges them into timeline.json."""
        if self.origin_s is None:  # the run ended before it started (on every rank)
            return
        end_s = time.perf_counter()
        run.timer.trace = None
        ranks, run_dir = run.ranks, Path(run.config.out)
        events = rank_events(
            self.records, self.steps, self.epoch_ends, self.origin_s, end_s, ranks.rank
        )
        try:
            write_rank_file(run_dir, ranks.rank, self.token, events)
        except OSError:
            pass  # rank 0 names this rank as missing in the trace
        mpi.barrier(ranks.comm)
        if not ranks.is_root:
            return
        try:
            missing = merge_files(run_dir, ranks.size, self.token, status)
        except OSError as exc:
            print(f"mpigd: timeline not written: {exc}", file=sys.stderr, flush=True)
            return
        if missing:
            print(f"mpigd: {missing_note(missing)}", file=sys.stderr, flush=True)


def rank_events(records, steps, epoch_ends, origin_s: float, end_s: float, rank: int) -> list:
    """One rank's Chrome trace events (``pid`` = ``rank``), in no particular order.

    Parameters
    ----------
    records : the timer's ``(cat, label, start_s, end_s, extra)`` tuples.
    steps : ``(global step, epoch, start_s)`` of every step, in order.
    epoch_ends : ``(epoch, end_s)`` of every completed epoch.
    origin_s, end_s : the common origin and the run's end on this rank.

    All times are ``perf_counter`` seconds; events get microseconds since ``origin_s``.
    A step lasts until the next step starts, its epoch ends, the run ends or an ``eval``
    or ``checkpoint`` span starts, whichever comes first; an epoch from its first step
    to its end.
    """

    def complete(cat, name, start_s, stop_s, args) -> dict:
        # Whole nanoseconds first, so that rounding never lets a child outgrow its parent.
        start, stop = round((start_s - origin_s) * 1e9), round((stop_s - origin_s) * 1e9)
        event = {"ph": "X", "cat": cat, "name": name, "pid": rank, "tid": 0,
                 "ts": start / 1e3, "dur": (stop - start) / 1e3}  # fmt: skip
        if args:
            event["args"] = args
        return event

    events = []
    for cat, label, start_s, stop_s, extra in records:
        args = extra if extra is None or isinstance(extra, dict) else {"nbytes": int(extra)}
        events.append(complete(cat, label or cat, start_s, stop_s, args))
    closers = sorted(
        [start_s for _, _, start_s in steps]
        + [stop_s for _, stop_s in epoch_ends]
        + [start_s for cat, _, start_s, _, _ in records if cat in BETWEEN_STEPS]
        + [end_s]
    )
    first_step_s = {}
    for step, epoch, start_s in steps:
        stop_s = closers[bisect_right(closers, start_s)]
        events.append(complete("step", f"step {step}", start_s, stop_s,
                               {"step": step, "epoch": epoch}))  # fmt: skip
        first_step_s.setdefault(epoch, start_s)
    for epoch, stop_s in epoch_ends:
        if epoch in first_step_s:
            events.append(complete("epoch", f"epoch {epoch}", first_step_s[epoch], stop_s,
                                   {"epoch": epoch}))  # fmt: skip
    return events


def merge(per_rank: dict[int, list[dict]], size: int, status: str | None = None) -> dict:
    """The whole trace (a JSON-ready dict) from each rank's events, keyed by rank.

    Ranks in ``range(size)`` absent from ``per_rank`` are named in ``otherData``.
    Changes the events of ``per_rank`` in place: moves them all by the same amount, so
    that the earliest starts at 0, and the wait analysis (module docstring) annotates
    the matched ``comm`` and ``step`` events; it adds ``wait`` events.
    """
    earliest_ns = min((_ns(e["ts"]) for events in per_rank.values() for e in events), default=0)
    origin_ns = max(0, -earliest_ns)
    for events in per_rank.values():
        for event in events:
            event["ts"] = (_ns(event["ts"]) + origin_ns) / 1e3
    waits, last_rank_steps = _match_collectives(per_rank)
    trace_events = []
    for rank in sorted(per_rank):
        trace_events += [
            {"ph": "M", "name": "process_name", "pid": rank, "tid": 0,
             "args": {"name": f"rank {rank}"}},
            {"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0,
             "args": {"sort_index": rank}},
        ]  # fmt: skip
    for rank in sorted(per_rank):
        # Parents before children: earlier start first, then the longer event (a sort is
        # stable, so a wait slice follows its call when the two coincide).
        trace_events += sorted(per_rank[rank] + waits[rank], key=lambda e: (e["ts"], -e["dur"]))
    other = {
        "ranks": size,
        "status": status,
        "clock": "microseconds; the ranks' clocks are aligned at a barrier at the run's start",
        "origin_us": origin_ns / 1e3,
        "last_rank_steps": {f"rank {r}": n for r, n in sorted(last_rank_steps.items())},
    }
    missing = [rank for rank in range(size) if rank not in per_rank]
    if missing:
        other.update(missing_ranks=missing, note=missing_note(missing))
    return {"traceEvents": trace_events, "displayTimeUnit": "ms", "otherData": other}


def missing_note(missing: list[int]) -> str:
    """What the trace lacks when the files of the ``missing`` ranks never reached rank 0."""
    return (
        f"timeline has no events from ranks {missing}: rank 0 did not find their "
        f"{RANK_DIR}/rank-*.json files of this run (is the run directory on a filesystem "
        "that every rank shares?)"
    )


def _match_collectives(per_rank: dict[int, list[dict]]):
    """Wait slices per rank and, per rank, the steps in which the others waited for it.

    Returns ``(waits, last_rank_steps)``: ``{rank: [wait events]}`` (a defaultdict) and
    ``{rank: steps}``.
    """
    calls = defaultdict(dict)  # (step, inside it) -> rank -> its collective calls, in order
    for rank, events in per_rank.items():
        for interval, comm in _collectives_by_interval(events).items():
            calls[interval][rank] = comm
    waits = defaultdict(list)
    waited_ns = defaultdict(lambda: defaultdict(int))  # step -> rank -> its wait
    caused_ns = defaultdict(lambda: defaultdict(int))  # step -> rank -> others' wait for it
    for (step, inside), by_rank in calls.items():
        if len(by_rank) < max(len(per_rank), 2) or not _same_calls(by_rank.values()):
            continue
        for matched in zip(*by_rank.values(), strict=True):
            group = dict(zip(by_rank, matched, strict=True))
            last = max(group, key=lambda r: group[r]["ts"])
            arrival = _ns(group[last]["ts"])
            for rank, event in group.items():
                event.setdefault("args", {})["last_rank"] = last
                start = _ns(event["ts"])
                stop = min(arrival, start + _ns(event["dur"]))
                if stop <= start:
                    continue
                waits[rank].append({"ph": "X", "cat": "wait", "name": f"wait for rank {last}",
                                    "pid": rank, "tid": 0, "ts": start / 1e3,
                                    "dur": (stop - start) / 1e3,
                                    "args": {"waited_for_rank": last}})  # fmt: skip
                if inside:
                    waited_ns[step][rank] += stop - start
                    caused_ns[step][last] += stop - start
    last_of_step = {step: max(caused, key=caused.get) for step, caused in caused_ns.items()}
    for rank, events in per_rank.items():
        for event in events:
            if event["cat"] == "step" and event["args"]["step"] in last_of_step:
                step = event["args"]["step"]
                event["args"].update(last_rank=last_of_step[step],
                                     wait_us=waited_ns[step][rank] / 1e3)  # fmt: skip
    last_rank_steps = defaultdict(int)
    for last in last_of_step.values():
        last_rank_steps[last] += 1
    return waits, dict(last_rank_steps)


def _same_calls(sequences) -> bool:
    """Whether every rank's sequence of calls has the same names in the same order."""
    names = [[event["name"] for event in calls] for calls in sequences]
    return all(n == names[0] for n in names)


def _collectives_by_interval(events: list[dict]) -> dict[tuple, list[dict]]:
    """One rank's collective calls by interval: ``(step, True)`` inside that step,
    ``(step, False)`` after it until the next step, ``(None, False)`` before the first."""
    steps = sorted((e for e in events if e["cat"] == "step"), key=lambda e: e["ts"])
    starts = [_ns(step["ts"]) for step in steps]
    intervals = defaultdict(list)
    comm = (e for e in events if e["cat"] == "comm" and e["name"].split()[0] not in POINT_TO_POINT)
    for event in sorted(comm, key=lambda e: (e["ts"], -e["dur"])):
        start = _ns(event["ts"])
        i = bisect_right(starts, start) - 1
        if i < 0:
            intervals[None, False].append(event)
            continue
        step = steps[i]
        inside = start < starts[i] + _ns(step["dur"])
        intervals[step["args"]["step"], inside].append(event)
    return intervals


def _ns(microseconds: float) -> int:
    """A trace time or duration (microseconds, nanosecond resolution) in whole nanoseconds."""
    return round(microseconds * 1e3)


# -- files --------------------------------------------------------------------------


def rank_file(run_dir: Path, rank: int) -> Path:
    """Where ``rank`` leaves its events for rank 0."""
    return run_dir / RANK_DIR / f"rank-{rank:05d}.json"


def write_rank_file(run_dir: Path, rank: int, token: str, events: list[dict]) -> None:
    """This rank's events, tagged with the run's ``token``, in its own file."""
    path = rank_file(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        # Span args are for display: anything JSON lacks (a numpy scalar) is shown as text.
        document = {"rank": rank, "token": token, "events": events}
        json.dump(document, out, separators=(",", ":"), default=str)


def merge_files(run_dir: Path, size: int, token: str, status: str | None = None) -> list[int]:
    """Rank 0: merge this run's rank files into ``timeline.json``; the ranks without one.

    ``timeline.json`` is replaced atomically; then the merged files are removed, and the
    directory if nothing else is left in it. A file that is missing, unreadable or of
    another run (another ``token``) is left alone and its rank reported as missing.
    """
    per_rank, merged = {}, []
    for rank in range(size):
        path = rank_file(run_dir, rank)
        try:
            with open(path) as handle:
                written = json.load(handle)
        except (OSError, ValueError):
            continue
        if written.get("token") == token and written.get("rank") == rank:
            per_rank[rank] = written["events"]
            merged.append(path)
    trace = merge(per_rank, size, status)
    text = json.dumps(trace, separators=(",", ":"))
    replace_atomically(run_dir / TRACE_FILE, lambda tmp: tmp.write_text(text))
    for path in merged:
        path.unlink()
    try:
        (run_dir / RANK_DIR).rmdir()
    except OSError:
        pass  # not empty: files that this run did not write stay
    return [rank for rank in range(size) if rank not in per_rank]
