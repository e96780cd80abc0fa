"""Rank 0's console (:mod:`mpigd.run.progress` and the ``Progress`` hook): the epoch
meter's text and timing against a fake clock and a fake terminal, what the hook shows
for each strategy kind and mode, and, under real mpirun, the final JSON status line and
the timed lines of a batch log."""

from __future__ import annotations

import io
import json
import os
import types

import pytest
from helpers import make_problem, run_mpigd, write_h5

from mpigd.run import progress
from mpigd.run.hooks import Progress
from mpigd.run.progress import REDRAW_S, EpochMeter
from mpigd.run.state import RunState

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (and has no size: 80 columns)."""

    def isatty(self) -> bool:
        return True


def meter(clock, terminal=False, total=100, rows=1000, every_s=5.0, epochs=3):
    stderr = FakeTerminal() if terminal else io.StringIO()
    return EpochMeter(epochs, total, rows, "steps", every_s, stderr, io.StringIO(), clock)


# -- formatting -----------------------------------------------------------------------------


def test_rates_and_durations_read_as_people_write_them():
    assert [progress._si(v) for v in (0.5, 850, 999.4, 999.7, 62_400, 999_900, 3e9)] == [
        "0.5", "850", "999", "1k", "62.4k", "1M", "3G",
    ]  # fmt: skip
    assert [progress._duration(s) for s in (0, 41.4, 725, 7389)] == [
        "0:00", "0:41", "12:05", "2:03:09",
    ]  # fmt: skip


def test_the_epoch_line_shows_the_asynchronous_servers_staleness(capsys):
    row = {"epoch": 2, "train_loss": 0.5, "time_s": 1.0, "compute_s": 0.5, "comm_s": 0.25,
           "io_s": 0.0, "staleness_mean": 1.25, "staleness_max": 4}  # fmt: skip
    progress.report("bar", row, 10)
    assert "staleness mean 1.25 max 4" in capsys.readouterr().out
    del row["staleness_mean"], row["staleness_max"]
    progress.report("bar", row, 10)
    assert "staleness" not in capsys.readouterr().out


def test_a_terminal_that_reports_no_width_is_taken_as_80_columns(monkeypatch):
    class Pty(FakeTerminal):
        def fileno(self) -> int:
            return 2

    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    assert progress._columns(Pty()) == 80
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((132, 0)))
    assert progress._columns(Pty()) == 132
    assert progress._columns(FakeTerminal()) == 80  # no file descriptor at all


# -- the meter's timing ---------------------------------------------------------------------


def test_a_batch_log_gets_a_plain_line_every_so_many_seconds():
    clock = FakeClock()
    m = meter(clock, every_s=5.0)
    m.at(1, 0)  # the epoch starts: nothing yet
    for step, dt in enumerate([1.0, 2.0, 1.9], start=1):  # 4.9 s: still nothing
        clock.now += dt
        m.at(1, step * 10)
    assert m.stream.getvalue() == ""
    clock.now += 5.1  # 10 s, 50 of 100 steps: 5 steps/s = 50 rows/s, 10 s left
    m.at(1, 50)
    assert m.stream.getvalue() == "epoch 1/3  50% (50/100 steps)  50 rows/s  0:10 left\n"
    clock.now += 4.9  # the next line is due 5 s after the last one
    m.at(1, 60)
    assert m.stream.getvalue().count("\n") == 1
    clock.now += 0.1
    m.at(1, 75)
    assert m.stream.getvalue().endswith("epoch 1/3  75% (75/100 steps)  50 rows/s  0:05 left\n")
    m.end()  # a plain line needs no wiping
    assert m.stream.getvalue().count("\n") == 2


def test_a_resumed_epoch_measures_from_where_it_resumed():
    clock = FakeClock()
    m = meter(clock, every_s=1.0)
    m.at(1, 40)  # 40 steps were taken before the checkpoint
    clock.now += 2.0
    m.at(1, 50)  # 10 steps in 2 s
    assert m.stream.getvalue() == "epoch 1/3  50% (50/100 steps)  50 rows/s  0:10 left\n"


def test_before_the_first_step_is_done_there_is_no_rate_to_show():
    clock = FakeClock()
    m = meter(clock, every_s=1.0)
    m.at(2, 0)
    clock.now += 3.0  # one long step
    m.at(2, 0)
    assert m.stream.getvalue() == "epoch 2/3  0% (0/100 steps)  - rows/s  time left -\n"


def test_on_a_terminal_the_bar_is_redrawn_in_place_a_few_times_a_second_and_wiped():
    clock = FakeClock()
    m = meter(clock, terminal=True, every_s=30.0)
    assert m.live and m.interval == REDRAW_S
    m.at(1, 0)
    clock.now += 0.125
    m.at(1, 1)
    assert m.stream.getvalue() == ""
    clock.now += 0.125  # 2 steps in 0.25 s: 8 steps/s, 80 rows/s, 12.25 s left
    m.at(1, 2)
    first = m.stream.getvalue()
    assert first.startswith("\repoch 1/3 [") and "\n" not in first
    assert first.endswith("]   2%  80 rows/s  0:12 left")
    clock.now += 9.75  # 10 s in, half done
    m.at(1, 50)
    second = m.stream.getvalue()[len(first) :]
    text = "epoch 1/3 [" + "#" * 12 + "." * 12 + "]  50%  50 rows/s  0:10 left"
    assert second == "\r" + text.ljust(len(first) - 1)
    m.end()
    wiped = m.stream.getvalue()[len(first) + len(second) :]
    assert wiped == "\r" + " " * len(text) + "\r"
    m.end()  # nothing drawn since: nothing written
    assert m.stream.getvalue().endswith(wiped)


def test_a_shorter_redraw_covers_the_longer_line_before_it():
    clock = FakeClock()
    m = meter(clock, terminal=True, total=10**6, rows=10**9, every_s=1.0)
    m.at(1, 0)
    clock.now += 1.0
    m.at(1, 1)  # slow: hours left
    long = m.stream.getvalue()
    clock.now += 1.0
    m.at(1, 999_000)  # then fast: seconds left
    short = m.stream.getvalue()[len(long) :]
    assert len(short) == len(long) and short.rstrip(" ") != short


# -- the hook -------------------------------------------------------------------------------


def fake_run(rank=0, size=2, lockstep=True, stop_reason=None, every_s=5.0, epochs=3,
             batch_size=10, n_rows=1000):  # fmt: skip
    """What the Progress hook reads of a Run."""
    return types.SimpleNamespace(
        ranks=types.SimpleNamespace(is_root=rank == 0, size=size),
        config=types.SimpleNamespace(
            progress_every=every_s,
            loop_epochs=(epochs, "--epochs"),
            batch_size=batch_size,
            servers=1,
        ),
        data=types.SimpleNamespace(info=types.SimpleNamespace(n_rows=n_rows)),
        parts=types.SimpleNamespace(
            strategy=types.SimpleNamespace(steps_in_lockstep=lockstep),
            optimizer=types.SimpleNamespace(stop_reason=stop_reason),
        ),
        state=RunState(),
    )


def epoch_row(epoch, loss):
    return {"epoch": epoch, "train_loss": loss, "time_s": 1.0, "compute_s": 0.5,
            "comm_s": 0.25, "io_s": 0.0}  # fmt: skip


def train_epoch(hook, run, clock, epoch, steps, step_s, loss):
    """Drive ``hook`` as the loop does through one epoch of ``steps`` steps."""
    run.state.epoch = epoch
    for step in range(steps):
        run.state.step_in_epoch = step
        hook.before_step(run)
        run.state.global_step += 1
        clock.now += step_s
    run.state.epochs_done, run.state.step_in_epoch = epoch, 0
    hook.epoch_ended(run, epoch_row(epoch, loss))


def summary(stop_reason: str, epochs_run: int, final_train_loss: float) -> dict:
    """What ``train`` returns, as the loop hands it to ``run_recorded``."""
    return {"stop_reason": stop_reason, "epochs_run": epochs_run,
            "final_train_loss": final_train_loss}  # fmt: skip


def test_bar_mode_shows_the_epoch_as_it_runs_then_why_the_run_stopped(capsys):
    clock, stderr = FakeClock(), FakeTerminal()
    hook, run = Progress("bar", stderr=stderr, clock=clock), fake_run(stop_reason=None)
    hook.run_started(run)
    train_epoch(hook, run, clock, 1, steps=100, step_s=0.25, loss=0.75)  # 4 steps/s
    drawn = stderr.getvalue()
    assert drawn.count("\repoch 1/3 [") == 99 and "40 rows/s" in drawn  # every step but the 1st
    assert drawn.endswith(" \r")  # wiped before the epoch line
    hook.run_ended(run, "completed")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 1/3  train_loss 0.75  ")
    reason = "converged: gradient infinity norm 1e-07 <= tol 1e-06"
    hook.run_recorded(run, summary(reason, 1, 0.75))  # once run.json says completed
    assert capsys.readouterr().out.splitlines() == [
        "stopped: converged: gradient infinity norm 1e-07 <= tol 1e-06 (1 epochs, final "
        "train loss 0.75)"
    ]


def test_a_run_that_reached_its_epochs_says_so_and_a_preempted_one_leaves_it_to_the_error(
    capsys,
):
    clock = FakeClock()
    hook, run = Progress("bar", stderr=io.StringIO(), clock=clock), fake_run(epochs=2)
    hook.run_started(run)
    for epoch in (1, 2):
        train_epoch(hook, run, clock, epoch, steps=100, step_s=0.01, loss=1.0 / epoch)
    hook.run_ended(run, "completed")
    hook.run_recorded(run, summary("reached --epochs 2", 2, 0.5))
    assert capsys.readouterr().out.splitlines()[-1] == (
        "stopped: reached --epochs 2 (2 epochs, final train loss 0.5)"
    )
    hook.run_ended(run, "preempted")  # run_guarded prints why, on stderr
    assert capsys.readouterr().out == ""


def test_json_mode_ends_with_the_final_status_and_draws_nothing_during_an_epoch(capsys):
    clock, stderr = FakeClock(), FakeTerminal()
    hook, run = Progress("json", stderr=stderr, clock=clock), fake_run(every_s=0.01)
    hook.run_started(run)
    train_epoch(hook, run, clock, 1, steps=100, step_s=1.0, loss=0.25)
    hook.run_ended(run, "completed")
    hook.run_recorded(run, summary("reached --epochs 3", 1, 0.25))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["epoch"] == 1 and stderr.getvalue() == ""
    assert lines[1:] == [{"status": "completed", "stop_reason": "reached --epochs 3",
                          "epochs_run": 1, "final_train_loss": 0.25}]  # fmt: skip
    hook.run_ended(run, "failed")
    assert json.loads(capsys.readouterr().out) == {
        "status": "failed", "stop_reason": None, "epochs_run": 1, "final_train_loss": None,
    }  # fmt: skip


def test_only_rank_0_prints_and_progress_every_0_keeps_to_the_epoch_lines(capsys):
    for run, mode in ((fake_run(rank=1), "json"), (fake_run(every_s=0.0), "bar")):
        clock, stdout = FakeClock(), io.StringIO()
        hook = Progress(mode, stderr=io.StringIO(), stdout=stdout, clock=clock)
        hook.run_started(run)
        assert hook.meter is None
        run.state.epoch = 1
        for _ in range(10):
            hook.before_step(run)
            clock.now += 100.0
        assert stdout.getvalue() == ""
    assert capsys.readouterr().out == ""


def test_an_asynchronous_server_counts_the_gradients_it_applied():
    clock, stdout = FakeClock(), io.StringIO()
    hook = Progress("bar", stderr=io.StringIO(), stdout=stdout, clock=clock)
    run = fake_run(size=3, lockstep=False, every_s=24.75)  # 2 workers x 100 steps
    hook.run_started(run)
    for epoch in (1, 2):
        run.state.epoch = epoch
        for _ in range(100):  # the server's before_step calls all come first
            hook.before_step(run)
        clock.now += 50.0  # and say nothing about how far the epoch is
        for applied in range(100):  # 4 a second, 5 rows each; the first starts the clock
            hook.gradient_applied(run, worker=1 + applied % 2, step=applied // 2, lag=0)
            clock.now += 0.25
        hook.epoch_ended(run, epoch_row(epoch, 0.5))
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 2  # 24.75 s after each epoch's first gradient
    assert lines[1] == "epoch 2/3  50% (100/200 gradients)  20 rows/s  0:25 left"


# -- under mpirun ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_steps(tmp_path_factory):
    """A dataset whose epoch at batch size 4 takes 750 steps: long enough for lines."""
    X, y = make_problem("binary", n_rows=3000, d=4)
    return write_h5(tmp_path_factory.mktemp("progress") / "train.h5", X, y, "binary", 2)


def train_args(data, out, *extra):
    return ("train", "--data", str(data), "--out", str(out), "--model", "logreg",
            "--optimizer", "sgd", "--lr", "0.05", "--backend", "numpy", *extra)  # fmt: skip


def test_json_mode_ends_with_the_runs_final_status(many_steps, tmp_path):
    out = tmp_path / "run"
    result = run_mpigd(2, *train_args(many_steps, out, "--epochs", "2", "--batch-size", "300",
                                      "--json"), timeout=50)  # fmt: skip
    assert result.returncode == 0, result.stderr
    *epochs, final = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["epoch"] for row in epochs] == [1, 2]
    recorded = json.loads((out / "run.json").read_text())
    assert final == {
        "status": "completed", "stop_reason": recorded["stop_reason"],
        "epochs_run": recorded["epochs_run"], "final_train_loss": recorded["final_train_loss"],
    }  # fmt: skip
    assert final["stop_reason"] == "reached --epochs 2" and final["epochs_run"] == 2


def test_a_batch_log_hears_from_a_long_epoch(many_steps, tmp_path):
    result = run_mpigd(2, *train_args(many_steps, tmp_path / "run", "--epochs", "1",
                                      "--batch-size", "4", "--progress-every", "0.002"),
                       timeout=50)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    during = [line for line in lines if "/750 steps)" in line]
    assert during and all(line.startswith("epoch 1/1  ") for line in during), lines
    assert lines.index(during[-1]) < next(i for i, x in enumerate(lines) if "train_loss" in x)
    assert lines[-1].startswith("stopped: reached --epochs 1 (1 epochs, final train loss ")
    assert "\r" not in result.stdout + result.stderr  # a pipe is not a terminal
