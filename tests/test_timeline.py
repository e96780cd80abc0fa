"""The step timeline (mpigd.run.timeline): per-rank events, the merge and its wait analysis,
the files, the hook on one rank, and ``train --timeline`` under mpirun -n 2."""

from __future__ import annotations

import json
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from helpers import make_problem, run_mpigd, write_h5
from mpi4py import MPI

from mpigd.comm import RankInfo
from mpigd.run.timeline import (
    RANK_DIR,
    TRACE_FILE,
    TimelineHook,
    merge,
    merge_files,
    rank_events,
    rank_file,
    write_rank_file,
)
from mpigd.timing import PhaseTimer


def check_trace(trace: dict) -> None:
    """Assert that ``trace`` is a Chrome trace whose complete events nest on each track."""
    json.loads(json.dumps(trace))  # plain JSON all through
    assert isinstance(trace["traceEvents"], list)
    by_track = {}
    for event in trace["traceEvents"]:
        assert event["ph"] in ("X", "M")
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        assert isinstance(event["name"], str)
        if event["ph"] == "X":
            assert isinstance(event["cat"], str)
            assert event["dur"] >= 0
            by_track.setdefault((event["pid"], event["tid"]), []).append(event)
    for events in by_track.values():
        check_nesting(events)


def check_nesting(events: list[dict]) -> None:
    """Complete events on one track either contain one another or do not overlap."""
    open_ends = []
    for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        start, end = round(event["ts"] * 1e3), round((event["ts"] + event["dur"]) * 1e3)
        while open_ends and open_ends[-1] <= start:
            open_ends.pop()
        assert not open_ends or end <= open_ends[-1], f"{event} overlaps its parent"
        open_ends.append(end)


def x_event(rank, cat, name, ts, dur, **args):
    event = {"ph": "X", "cat": cat, "name": name, "pid": rank, "tid": 0, "ts": ts, "dur": dur}
    if args:
        event["args"] = args
    return event


# -- one rank's events ----------------------------------------------------------------


def test_rank_events_steps_contain_their_phases_and_end_where_eval_starts():
    # perf_counter seconds; origin 100 s. Two steps, then a train_loss pass and the epoch end.
    records = [
        ("compute", None, 100.0010, 100.0030, None),
        ("comm", "Allreduce", 100.0030, 100.0040, 808),
        ("compute", None, 100.0050, 100.0070, None),
        ("comm", "Allreduce", 100.0070, 100.0080, 808),
        ("comm", "Allreduce", 100.0095, 100.0097, 16),
        ("eval", "train_loss", 100.0090, 100.0098, {}),
        ("checkpoint", "checkpoint", 100.0100, 100.0120, {}),
    ]
    steps = [(0, 1, 100.0005), (1, 1, 100.0045)]
    events = rank_events(records, steps, [(1, 100.0099)], 100.0, 100.0200, rank=3)
    check_trace({"traceEvents": events})
    assert all(e["pid"] == 3 and e["tid"] == 0 and e["ph"] == "X" for e in events)
    by_name = {}
    for event in events:
        by_name.setdefault(event["name"], []).append(event)
    step0, step1 = by_name["step 0"][0], by_name["step 1"][0]
    assert (step0["ts"], step0["dur"]) == (500.0, 4000.0)  # until step 1 starts
    assert (step1["ts"], step1["dur"]) == (4500.0, 4500.0)  # until train_loss starts
    assert step1["args"] == {"step": 1, "epoch": 1}
    epoch = by_name["epoch 1"][0]
    assert (epoch["ts"], epoch["dur"], epoch["cat"]) == (500.0, 9400.0, "epoch")
    assert by_name["Allreduce"][0]["args"] == {"nbytes": 808}
    assert "args" not in by_name["compute"][0]
    assert Counter(e["cat"] for e in events) == Counter(
        compute=2, comm=3, eval=1, checkpoint=1, step=2, epoch=1
    )


def test_timer_and_rank_events_keep_the_nesting():
    timer = PhaseTimer()
    timer.trace = []
    origin = 0.0
    steps = []
    for step in range(3):
        steps.append((step, 1, time.perf_counter()))
        with timer.phase("compute"):
            for bucket in range(3):
                with timer.phase("comm", f"Iallreduce bucket {bucket}", 80):
                    pass
        with timer.phase("comm", "Waitall"):
            pass
    end = time.perf_counter()
    events = rank_events(timer.trace, steps, [(1, end)], origin, end, rank=0)
    check_trace({"traceEvents": events})
    assert Counter(e["cat"] for e in events) == Counter(comm=12, compute=3, step=3, epoch=1)


# -- the merge and its wait analysis ----------------------------------------------------


def two_step_ranks(arrivals):
    """Three ranks, two steps of (compute, Allreduce) each; ``arrivals[step][rank]`` is
    when the rank calls Allreduce, and every call ends at 1000 us after its step start."""
    per_rank = {}
    for rank in range(3):
        events = []
        for step, step_ts in enumerate((0.0, 2000.0)):
            arrive = step_ts + arrivals[step][rank]
            events += [
                x_event(rank, "step", f"step {step}", step_ts, 2000.0, step=step, epoch=1),
                x_event(rank, "compute", "compute", step_ts, arrive - step_ts),
                x_event(rank, "comm", "Allreduce", arrive, step_ts + 1000.0 - arrive, nbytes=8),
            ]
        per_rank[rank] = events
    return per_rank


def test_merge_finds_who_everyone_waited_for():
    trace = merge(two_step_ranks([(100.0, 200.0, 700.0), (300.0, 900.0, 50.0)]), 3, "completed")
    check_trace(trace)
    meta = [e for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert [(e["pid"], e["args"]["name"]) for e in meta] == [(r, f"rank {r}") for r in range(3)]
    waits = [e for e in trace["traceEvents"] if e.get("cat") == "wait"]
    got = sorted((w["pid"], w["ts"], w["dur"], w["args"]["waited_for_rank"]) for w in waits)
    assert got == [
        (0, 100.0, 600.0, 2),
        (0, 2300.0, 600.0, 1),
        (1, 200.0, 500.0, 2),
        (2, 2050.0, 850.0, 1),
    ]
    steps = {(e["pid"], e["args"]["step"]): e["args"] for e in trace["traceEvents"]
             if e.get("cat") == "step"}  # fmt: skip
    assert steps[0, 0]["last_rank"] == 2 and steps[0, 0]["wait_us"] == 600.0
    assert steps[2, 0]["wait_us"] == 0.0
    assert steps[1, 1]["last_rank"] == 1 and steps[2, 1]["wait_us"] == 850.0
    comm = [e for e in trace["traceEvents"] if e.get("cat") == "comm"]
    assert all(e["args"]["nbytes"] == 8 and "last_rank" in e["args"] for e in comm)
    assert trace["otherData"]["last_rank_steps"] == {"rank 1": 1, "rank 2": 1}
    assert trace["otherData"]["status"] == "completed"
    assert "missing_ranks" not in trace["otherData"]


def test_a_wait_is_cut_at_the_end_of_its_call():
    # Rank 0's call (a Bcast it roots) ends before rank 1 even arrives.
    per_rank = {
        0: [x_event(0, "step", "step 0", 0.0, 100.0, step=0, epoch=1),
            x_event(0, "comm", "Bcast", 10.0, 5.0)],
        1: [x_event(1, "step", "step 0", 0.0, 100.0, step=0, epoch=1),
            x_event(1, "comm", "Bcast", 40.0, 1.0)],
    }  # fmt: skip
    waits = [e for e in merge(per_rank, 2)["traceEvents"] if e.get("cat") == "wait"]
    assert [(w["pid"], w["ts"], w["dur"]) for w in waits] == [(0, 10.0, 5.0)]


def test_no_matching_where_the_ranks_calls_differ_and_point_to_point_is_left_out():
    server = [x_event(0, "step", "step 0", 0.0, 100.0, step=0, epoch=1),
              x_event(0, "comm", "Recv", 1.0, 20.0), x_event(0, "comm", "Send", 30.0, 2.0),
              x_event(0, "comm", "Allreduce", 50.0, 10.0)]  # fmt: skip
    worker = [x_event(1, "step", "step 0", 0.0, 100.0, step=0, epoch=1),
              x_event(1, "comm", "Send", 1.0, 2.0), x_event(1, "comm", "Recv", 3.0, 28.0),
              x_event(1, "comm", "Allreduce", 40.0, 20.0)]  # fmt: skip
    trace = merge({0: server, 1: worker}, 2)
    waits = [e for e in trace["traceEvents"] if e.get("cat") == "wait"]
    assert [(w["pid"], w["ts"], w["dur"], w["args"]) for w in waits] == [
        (1, 40.0, 10.0, {"waited_for_rank": 0})
    ]
    # Another collective on one rank only: the step's sequences differ, nothing is matched.
    server.append(x_event(0, "comm", "Bcast", 70.0, 1.0))
    trace = merge({0: server, 1: worker}, 2)
    assert not [e for e in trace["traceEvents"] if e.get("cat") == "wait"]
    assert trace["otherData"]["last_rank_steps"] == {}


def test_calls_after_a_step_are_matched_apart_from_the_step():
    per_rank = {
        rank: [
            x_event(rank, "step", "step 0", 0.0, 100.0, step=0, epoch=1),
            x_event(rank, "comm", "Allreduce", 50.0 + 10 * rank, 50.0 - 10 * rank),
            x_event(rank, "eval", "train_loss", 100.0, 50.0),
            x_event(rank, "comm", "Allreduce", 140.0 - 20 * rank, 5.0 + 20 * rank),
        ]
        for rank in range(2)
    }
    trace = merge(per_rank, 2)
    check_trace(trace)
    waits = sorted((w["pid"], w["ts"], w["args"]["waited_for_rank"])
                   for w in trace["traceEvents"] if w.get("cat") == "wait")  # fmt: skip
    assert waits == [(0, 50.0, 1), (1, 120.0, 0)]
    step_args = [e["args"] for e in trace["traceEvents"] if e.get("cat") == "step"]
    assert [a["last_rank"] for a in step_args] == [1, 1]  # only the step's own calls


def test_merge_reports_missing_ranks():
    per_rank = two_step_ranks([(100.0, 200.0, 700.0), (300.0, 900.0, 50.0)])
    del per_rank[1]
    trace = merge(per_rank, 3)
    check_trace(trace)
    assert trace["otherData"]["missing_ranks"] == [1]
    assert "[1]" in trace["otherData"]["note"]
    assert {e["pid"] for e in trace["traceEvents"]} == {0, 2}


# -- files -------------------------------------------------------------------------------


def test_merge_files_writes_the_trace_and_removes_only_this_runs_files(tmp_path):
    per_rank = two_step_ranks([(100.0, 200.0, 700.0), (300.0, 900.0, 50.0)])
    write_rank_file(tmp_path, 0, "this-run", per_rank[0])
    write_rank_file(tmp_path, 2, "this-run", per_rank[2])
    missing = merge_files(tmp_path, 3, "this-run", "completed")
    assert missing == [1]
    trace = json.loads((tmp_path / TRACE_FILE).read_text())
    check_trace(trace)
    assert trace["otherData"]["missing_ranks"] == [1]
    assert not (tmp_path / RANK_DIR).exists()

    write_rank_file(tmp_path, 0, "this-run", per_rank[0])
    write_rank_file(tmp_path, 1, "an-earlier-run", per_rank[1])
    (tmp_path / RANK_DIR / "rank-00002.json").write_text("{truncated")
    assert merge_files(tmp_path, 3, "this-run") == [1, 2]
    assert not rank_file(tmp_path, 0).exists()
    assert rank_file(tmp_path, 1).exists() and (tmp_path / RANK_DIR / "rank-00002.json").exists()


def test_the_hook_on_one_rank_writes_a_trace(tmp_path):
    timer = PhaseTimer()
    run = SimpleNamespace(
        ranks=RankInfo(MPI.COMM_SELF, 0, 1),
        timer=timer,
        state=SimpleNamespace(global_step=0, epoch=1),
        config=SimpleNamespace(out=str(tmp_path)),
        data=SimpleNamespace(load_interval=(time.perf_counter() - 2.0, time.perf_counter() - 1.0)),
    )
    hook = TimelineHook()
    hook.run_started(run)
    assert timer.trace is not None
    for epoch in (1, 2):
        run.state.epoch = epoch
        for _ in range(3):
            hook.before_step(run)
            with timer.phase("compute"):
                pass
            with timer.phase("comm", "Allreduce", 64):
                pass
            run.state.global_step += 1
        with timer.span("evaluation"), timer.phase("comm", "Allreduce", 16):
            pass
        hook.epoch_ended(run, {"epoch": epoch})
        with timer.span("checkpoint", epoch=epoch):
            pass
    hook.run_ended(run, "completed")
    assert timer.trace is None
    trace = json.loads((tmp_path / TRACE_FILE).read_text())
    check_trace(trace)
    kinds = Counter(e["cat"] for e in trace["traceEvents"] if e["ph"] == "X")
    assert kinds == Counter(step=6, compute=6, comm=8, eval=2, checkpoint=2, epoch=2, io=1)
    assert not (tmp_path / RANK_DIR).exists()


# -- end to end --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_train_timeline_on_two_ranks(tmp_path):
    X, y = make_problem("binary", n_rows=1200, d=5, seed=3)
    train = write_h5(tmp_path / "train.h5", X[:1000], y[:1000], "binary", 2)
    test = write_h5(tmp_path / "test.h5", X[1000:], y[1000:], "binary", 2)
    out = tmp_path / "run"
    result = run_mpigd(
        2, "train", "--data", str(train), "--test-data", str(test), "--model", "logreg",
        "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "100", "--epochs", "3",
        "--checkpoint-every", "1", "--timeline", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trace = json.loads((out / TRACE_FILE).read_text())
    check_trace(trace)
    names = [e for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert sorted(e["args"]["name"] for e in names) == ["rank 0", "rank 1"]
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for rank in (0, 1):
        kinds = {e["cat"] for e in events if e["pid"] == rank}
        assert {"step", "compute", "comm", "eval"} <= kinds, (rank, kinds)
        steps = [e for e in events if e["pid"] == rank and e["cat"] == "step"]
        assert len(steps) == 3 * 10
    assert "checkpoint" in {e["cat"] for e in events if e["pid"] == 0}
    assert any(e["cat"] == "comm" and e.get("args", {}).get("nbytes", 0) > 0 for e in events)
    assert not (out / RANK_DIR).exists()
