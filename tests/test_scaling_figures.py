"""The study figures, read back from their artists: marks, baselines, fits and spreads.

Each test draws the figures of a synthetic summary (no runs) and checks what a reader
sees: oversubscribed points hollow (hatched bars), the baseline named on the speedup
axis, the ideal line of the time figure from the common baseline, a fit that misses
said so in the legend instead of drawn.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import study_point

from experiments import plots
from experiments.study_dir import FIGURES
from experiments.summary import summarize


def point(strategy, ranks, time_s, repeat=0, cores=2):
    """A completed points.csv row on a machine with ``cores`` cores, all ranks on one node."""
    return study_point(ranks, time_s, repeat, strategy, cores=cores, ranks_per_node=ranks,
                       oversubscribed=ranks > cores, loaded=False)  # fmt: skip


@pytest.fixture(scope="module")
def strong():
    """Strong scaling on 4 cores: allreduce from P = 1 scales, ps-sync from P = 2 is slower
    and gets slower (Amdahl cannot fit it); P = 8 is oversubscribed."""
    points = []
    for repeat, scale in enumerate((1.0, 1.1, 0.95)):
        points += [
            point("allreduce", p, scale * (0.1 + 0.9 / p), repeat, cores=4) for p in (1, 2, 3, 4, 8)
        ]
        points += [point("ps-sync", p, scale * 3.0 * p / 2, repeat, cores=4) for p in (2, 3, 4, 8)]
    summary = summarize(points, "strong")
    return summary, {name: (fig, note) for name, fig, note in plots.draw_study(summary, "t")}


def hollow_x(ax) -> set[float]:
    """Rank counts drawn with hollow (white-faced) markers."""
    return {
        float(x)
        for line in ax.get_lines()
        if line.get_marker() == "o" and line.get_markerfacecolor() == "white"
        for x in line.get_xdata()
    }


def legend_texts(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_every_figure_is_drawn(strong):
    _, figures = strong
    assert tuple(figures) == FIGURES


@pytest.mark.parametrize("name", ["time_per_epoch", "speedup", "efficiency", "karp_flatt"])
def test_oversubscribed_points_are_hollow_in_every_line_figure(strong, name):
    summary, figures = strong
    crowded = [r["oversubscribed"] for r in summary["rows"]]
    assert crowded == [False, False, False, False, True, False, False, False, True]
    ax = figures[name][0].axes[0]
    assert hollow_x(ax) == {8.0}
    assert plots.HOLLOW_LABEL in legend_texts(ax)


def test_oversubscribed_bars_are_hatched_and_labelled(strong):
    fig, _ = strong[1]["breakdown"]
    for ax in fig.axes:
        ticks = [tick.get_text() for tick in ax.get_xticklabels()]
        hatched = [bool(bar.get_hatch()) for bar in ax.patches[: len(ticks)]]
        assert hatched == [tick.startswith("8") for tick in ticks]
        assert [("oversub" in tick) for tick in ticks] == hatched
    assert plots.HATCHED_LABEL in legend_texts(fig.axes[0])


def test_a_machine_without_oversubscription_has_no_hollow_marks():
    summary = summarize([point("allreduce", p, 1.0 / p, cores=8) for p in (1, 2, 4)], "strong")
    for name, fig, _ in plots.draw_study(summary, "t"):
        if name != "breakdown":
            assert not hollow_x(fig.axes[0])
            assert plots.HOLLOW_LABEL not in legend_texts(fig.axes[0])


def test_time_figure_is_log_log_with_the_ideal_from_the_common_baseline(strong):
    summary, figures = strong
    ax = figures["time_per_epoch"][0].axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    ideal = next(line for line in ax.get_lines() if line.get_label().startswith("ideal"))
    base = summary["common_baseline"]
    assert (base["strategy"], base["ranks"]) == ("allreduce", 1)
    x, y = ideal.get_xdata(), ideal.get_ydata()
    assert y == pytest.approx(base["time_s"] * base["ranks"] / x)
    assert "allreduce/logreg/numba at P0 = 1" in ideal.get_label()
    # Both series are on it: the slower ps-sync lies above allreduce at every P.
    medians = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert np.all(medians["ps-sync/logreg/numba"] > medians["allreduce/logreg/numba"][1:])


def test_speedup_names_each_series_baseline(strong):
    ax = strong[1]["speedup"][0].axes[0]
    assert "T(P0) / T(P)" in ax.get_ylabel()
    texts = legend_texts(ax)
    assert "allreduce/logreg/numba (P0 = 1)" in texts
    assert "ps-sync/logreg/numba (P0 = 2)" in texts
    assert "own smallest rank count" in strong[1]["speedup"][1]


def test_one_baseline_for_all_is_named_on_the_axis():
    summary = summarize([point("allreduce", p, 4.0 / p, cores=16) for p in (2, 4, 8)], "strong")
    figures = {name: fig for name, fig, _ in plots.draw_study(summary, "t")}
    assert figures["speedup"].axes[0].get_ylabel().endswith("P0 = 2")
    assert figures["efficiency"].axes[0].get_ylabel().endswith("P0 = 2")


def test_a_law_that_does_not_fit_is_said_so_not_drawn(strong):
    summary, figures = strong
    fits = {entry["strategy"]: entry["fit"] for entry in summary["series"]}
    assert fits["allreduce"]["fits"] and 0 <= fits["allreduce"]["serial_fraction"] <= 1
    assert not fits["ps-sync"]["fits"] and fits["ps-sync"]["serial_fraction"] == pytest.approx(1)
    ax = figures["speedup"][0].axes[0]
    texts = legend_texts(ax)
    assert any(t.startswith("Amdahl fit  f = 0.100") for t in texts)
    assert "ps-sync/logreg/numba: Amdahl does not fit" in " ".join(texts)
    assert all("on P = 1, 2, 3, 4 only" in t for t in texts if t.startswith("Amdahl fit"))
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1  # allreduce's fit only


def test_efficiency_has_spread_bars(strong):
    summary, figures = strong
    ax = figures["efficiency"][0].axes[0]
    bars = [c for c in ax.collections if c.get_segments()]
    spans = sorted(
        (float(seg[0][1]), float(seg[1][1])) for bars_of in bars for seg in bars_of.get_segments()
    )
    expected = sorted((r["efficiency_min"], r["efficiency_max"]) for r in summary["rows"])
    np.testing.assert_allclose(spans, expected)
