"""The phase timer (mpigd.timing): every second booked to one phase, and the records it
appends for the timeline when a trace is attached."""

from __future__ import annotations

import time

import pytest

from mpigd.timing import PhaseTimer


class FakeClock:
    """``time.perf_counter`` that moves only when told (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


@pytest.mark.parametrize("traced", [False, True])
def test_nested_phases_book_each_second_once(clock, traced):
    timer = PhaseTimer()
    timer.trace = [] if traced else None
    with timer.phase("compute"):
        clock.advance(1.0)
        with timer.phase("comm", "Allreduce", 8):
            clock.advance(2.0)
        clock.advance(0.5)
    clock.advance(7.0)  # in no phase
    with timer.phase("io"):
        clock.advance(0.25)
    assert timer.take() == {"compute_s": 1.5, "comm_s": 2.0, "io_s": 0.25}
    assert timer.take() == {"compute_s": 0.0, "comm_s": 0.0, "io_s": 0.0}
    if traced:
        assert [(cat, start - 1000, end - 1000) for cat, _, start, end, _ in timer.trace] == [
            ("comm", 1.0, 3.0),
            ("compute", 0.0, 3.5),
            ("io", 10.5, 10.75),
        ]


def test_no_records_without_a_trace():
    timer = PhaseTimer()
    with timer.phase("compute"), timer.phase("comm", "Allreduce", 8), timer.span("evaluate"):
        pass
    assert timer.trace is None


def test_records_of_nested_phases_and_spans():
    timer = PhaseTimer()
    timer.trace = []
    with timer.span("train_loss", rows=7):
        with timer.phase("compute"):
            with timer.phase("comm", "Iallreduce bucket 0", 800):
                pass
            with timer.phase("comm", "Waitall"):
                pass
    with timer.span("checkpoint"), timer.span("write model", cat="io"), timer.span("other"):
        pass
    kinds = [(cat, label, extra) for cat, label, _, _, extra in timer.trace]
    assert kinds == [  # inner blocks end first
        ("comm", "Iallreduce bucket 0", 800),
        ("comm", "Waitall", None),
        ("compute", None, None),
        ("eval", "train_loss", {"rows": 7}),
        ("span", "other", {}),
        ("io", "write model", {}),
        ("checkpoint", "checkpoint", {}),
    ]
    times = {label or cat: (start, end) for cat, label, start, end, _ in timer.trace}
    outer = times["compute"]
    for inner in ("Iallreduce bucket 0", "Waitall"):
        assert outer[0] <= times[inner][0] <= times[inner][1] <= outer[1]
    assert times["train_loss"][0] <= outer[0] and outer[1] <= times["train_loss"][1]
    assert times["Iallreduce bucket 0"][1] <= times["Waitall"][0]
