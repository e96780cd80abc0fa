"""Figures of a scaling study (matplotlib, Agg): each written as PNG and PDF.

- ``time_per_epoch``: seconds per epoch against ranks (log-log), every series on one
  baseline: the ideal line ``T(P0) P0 / P`` (strong) or ``T(P0)`` (weak) starts from the
  fastest series at the smallest rank count (:func:`experiments.summary.common_baseline`);
- ``speedup``: measured speedup over each series' own baseline P0, ``T(P0) / T(P)``
  (strong) or ``(P/P0) T(P0) / T(P)`` (weak), with the ideal ``P / P0`` and the Amdahl
  or Gustafson fit, or a legend entry saying the law does not fit;
- ``efficiency``: parallel efficiency against ranks, ideal = 1;
- ``karp_flatt``: the experimentally determined serial fraction against ranks;
- ``breakdown``: stacked bars of compute / communication / I/O / other seconds per epoch
  at each rank count, one panel per series.

Every figure shows the median over repeats with the fastest..slowest repeat as bars,
draws oversubscribed points (more ranks per node than cores) hollow (hatched bars in
``breakdown``) with a legend entry saying so, and names under the axes the points that
started on a loaded machine (:mod:`experiments.contention`).

Input is the dict of :func:`experiments.summary.summarize`. Figures are drawn on the
Agg canvas directly (no pyplot state), so this works on nodes without a display.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from experiments.fits import AmdahlFit, GustafsonFit
from experiments.summary import series_key

HOLLOW_LABEL = "hollow: oversubscribed (ranks per node > cores)"
HATCHED_LABEL = "hatched: oversubscribed (ranks per node > cores)"
BREAKDOWN_NOTE = (
    "Phases are means over the ranks (points.csv also has the busiest rank's, *_max);\n"
    "waiting for slower ranks is inside communication; a negative 'other' is drawn as 0."
)
#: Height of the line figures: the axes and the legend under them.
LINE_FIGURE_HEIGHT_IN = 6.4
#: Tick labels of log axes as plain numbers (0.5, 2, 8), not powers.
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
#: Characters of x-small note text per inch of figure width, and its line height.
NOTE_CHARS_PER_INCH = 17
NOTE_LINE_HEIGHT_IN = 0.11
PHASES = (
    ("compute_s", "compute (kernels, updates)"),
    ("comm_s", "communication (MPI, incl. waiting in collectives)"),
    ("io_s", "I/O (reading data)"),
    ("eval_s", "test evaluation"),
    ("other_s", "other: epoch − the above (Python between phases)"),
)


def plot_study(summary: dict, out: Path, title: str | None = None) -> list[Path]:
    """Draw every figure of a study into ``out``; return the PNG paths written.

    Writes nothing when no run of the study completed.
    """
    figures = draw_study(summary, title or out.name)
    return [save_figure(fig, out / name, note) for name, fig, note in figures]


def draw_study(summary: dict, title: str) -> list[tuple[str, Figure, str | None]]:
    """Every figure of a study as (file stem, figure, note under the axes); [] without rows."""
    if not summary["rows"]:
        return []
    mode = summary["mode"]
    groups = _by_series(summary)
    marks = marks_note(summary["rows"])
    own_baselines = (
        "Each series against its own smallest rank count P0: how it scales, not how fast it "
        "is (time_per_epoch compares the series on one baseline)."
        if len(groups) > 1
        else None
    )
    speedup_note = "\n".join(filter(None, (own_baselines, marks))) or None
    baseline = summary["common_baseline"]
    return [
        ("time_per_epoch", _time_figure(groups, mode, title, baseline), marks),
        ("speedup", _speedup_figure(groups, mode, title), speedup_note),
        ("efficiency", _efficiency_figure(groups, mode, title), speedup_note),
        ("karp_flatt", _karp_flatt_figure(groups, mode, title), marks),
        (
            "breakdown",
            _breakdown_figure(groups, mode, title),
            BREAKDOWN_NOTE + (f"\n{marks}" if marks else ""),
        ),
    ]


def marks_note(rows: list[dict]) -> str | None:
    """A line naming the points with repeats that started on a loaded machine, or None."""
    loaded = [
        f"{'/'.join(series_key(r))} P={r['ranks']} ({r['loaded_repeats']} of {r['repeats']})"
        for r in rows
        if r.get("loaded_repeats")
    ]
    if not loaded:
        return None
    return (
        "Repeats that started on a loaded machine (other processes busy; times inflated): "
        + ", ".join(loaded)
    )


def _by_series(summary: dict) -> list[tuple[str, dict, list[dict]]]:
    """(label, series entry, its summary rows sorted by ranks) per series."""
    groups = []
    for entry in summary["series"]:
        key = series_key(entry)
        rows = [r for r in summary["rows"] if series_key(r) == key]
        groups.append(("/".join(key), entry, sorted(rows, key=lambda r: r["ranks"])))
    return groups


def _rank_axis(ax, groups, log: bool = False) -> np.ndarray:
    """Rank axis ticked at the measured rank counts (log2 when ``log`` or they span 8x).

    Returns the rank counts.
    """
    ranks = np.array(sorted({r["ranks"] for _, _, rows in groups for r in rows}))
    if log or ranks.max() >= 8 * ranks.min():
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(ranks, [str(p) for p in ranks])
    ax.set_xlabel("MPI ranks P")
    ax.grid(True, alpha=0.3)
    return ranks


def _draw_series(ax, rows, key, label, spread=None) -> str:
    """One series: medians joined by a line, oversubscribed points hollow, and the
    fastest..slowest repeat as bars when ``spread`` names the (low, high) columns.
    ``key`` names the summary column of the medians. Returns the series' colour."""
    x = np.array([r["ranks"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    (line,) = ax.plot(x, y, "-o", label=label, zorder=3)
    color = line.get_color()
    if spread:
        low = y - np.array([r[spread[0]] for r in rows])
        high = np.array([r[spread[1]] for r in rows]) - y
        ax.errorbar(x, y, yerr=[low, high], fmt="none", ecolor=color, capsize=3, zorder=2)
    crowded = np.array([bool(r.get("oversubscribed")) for r in rows])
    if crowded.any():
        ax.plot(x[crowded], y[crowded], "o", mfc="white", mec=color, mew=1.5, zorder=4)
    return color


def _legend(ax, groups, extra=()) -> None:
    """The axes' legend under the axes (it never hides a point), with the hollow-marker
    entry when a point is oversubscribed; ``extra`` are (handle, text) pairs to add."""
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = handles + [h for h, _ in extra], labels + [t for _, t in extra]
    if any(r.get("oversubscribed") for _, _, rows in groups for r in rows):
        hollow = Line2D([], [], marker="o", linestyle="none", mfc="white", mec="k", mew=1.5)
        handles, labels = handles + [hollow], labels + [HOLLOW_LABEL]
    ax.legend(handles, labels, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.13))


def _time_figure(groups, mode, title, baseline):
    fig = new_figure(height_in=LINE_FIGURE_HEIGHT_IN)
    ax = fig.subplots()
    ranks = _rank_axis(ax, groups, log=True)
    dense = np.geomspace(ranks.min(), ranks.max(), 64)
    p0, t0 = baseline["ranks"], baseline["time_s"]
    who = "/".join(series_key(baseline))
    if mode == "strong":
        ax.plot(dense, t0 * p0 / dense, "k:", label=f"ideal  T(P0)·P0/P, {who} at P0 = {p0}")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.plot(dense, np.full_like(dense, t0), "k:", label=f"ideal  T(P0), {who} at P0 = {p0}")
        ax.set_ylim(0.0, 1.15 * max(r["time_max_s"] for _, _, rows in groups for r in rows))
    for label, _, rows in groups:
        _draw_series(ax, rows, "time_median_s", label, ("time_min_s", "time_max_s"))
    ax.set_ylabel("seconds per epoch (median, bars: fastest..slowest)")
    ax.set_title(f"{mode.capitalize()} scaling: time per epoch ({title})")
    _legend(ax, groups)
    return fig


def _baseline_text(groups) -> tuple[str, bool]:
    """``P0 = 2`` when every series has that baseline (and False), else the legend's job."""
    bases = sorted({entry["baseline_ranks"] for _, entry, _ in groups})
    return (f"P0 = {bases[0]}", False) if len(bases) == 1 else ("P0 per series", True)


def fitted_speedup(entry: dict, ranks) -> np.ndarray | None:
    """The series' fitted speedup at ``ranks``, on the same baseline as the measurements."""
    fit = entry.get("fit")
    if fit is None:
        return None
    ranks = np.asarray(ranks, dtype=float)
    base = float(entry["baseline_ranks"])
    if fit["law"] == "amdahl":
        law = AmdahlFit(fit["serial_fraction"], fit["t1_s"], fit["max_relative_error"])
        return law.speedup(ranks) / law.speedup([base])[0]
    return GustafsonFit(fit["serial_fraction"], fit["max_relative_error"]).speedup(ranks / base)


def fit_label(fit: dict, all_ranks) -> str:
    """The legend text of a fit: its serial fraction and the rank counts it rests on, or
    why there is none (the law misses the data, or too few rank counts were clean)."""
    name = "Amdahl" if fit["law"] == "amdahl" else "Gustafson"
    symbol = "f" if fit["law"] == "amdahl" else "a"
    left_out = len(fit["fitted_ranks"]) < len(all_ranks)
    if fit["serial_fraction"] is None:
        return (f"no {name} fit: fewer than three rank counts without oversubscription\n"
                "  (a law through two points fits whatever the code does)")  # fmt: skip
    off = f"{100 * fit['max_relative_error']:.1f}%"
    if fit["fits"]:
        text = f"{name} fit  {symbol} = {fit['serial_fraction']:.3f} (worst point {off} off)"
    else:
        text = f"{name} does not fit: best {symbol} = {fit['serial_fraction']:.2f} misses by {off}"
    if left_out:
        shown = ", ".join(map(str, fit["fitted_ranks"]))
        text += f"\n  on P = {shown} only (oversubscribed P left out)"
    return text


def _speedup_figure(groups, mode, title):
    fig = new_figure(height_in=LINE_FIGURE_HEIGHT_IN)
    ax = fig.subplots()
    ranks = _rank_axis(ax, groups)
    dense = np.geomspace(ranks.min(), ranks.max(), 64)
    baseline, per_series = _baseline_text(groups)
    for base in sorted({entry["baseline_ranks"] for _, entry, _ in groups}):
        mine = dense[dense >= base]
        label = "ideal  S = P/P0" + (f" (P0 = {base})" if per_series else "")
        ax.plot(mine, mine / base, "k:", label=label)
    unfitted = []
    for label, entry, rows in groups:
        name = f"{label} (P0 = {entry['baseline_ranks']})" if per_series else label
        color = _draw_series(ax, rows, "speedup", name, ("speedup_min", "speedup_max"))
        fit = entry.get("fit")
        if fit is None:
            continue
        label_text = fit_label(fit, [r["ranks"] for r in rows])
        if fit["fits"]:
            mine = dense[dense >= entry["baseline_ranks"]]
            ax.plot(mine, fitted_speedup(entry, mine), "--", color=color, label=label_text)
        else:
            named = f"{label}: {label_text}" if len(groups) > 1 else label_text
            unfitted.append((Line2D([], [], color=color, linestyle="none"), named))
    if ranks.max() >= 8 * ranks.min():
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(PLAIN)
    if mode == "strong":
        ax.set_ylabel(f"speedup  T(P0) / T(P),  {baseline}")
    else:
        ax.set_ylabel(f"scaled speedup  (P/P0)·T(P0) / T(P),  {baseline}")
    ax.set_title(f"{mode.capitalize()} scaling: speedup ({title})")
    _legend(ax, groups, unfitted)
    return fig


def _efficiency_figure(groups, mode, title):
    fig = new_figure(height_in=LINE_FIGURE_HEIGHT_IN)
    ax = fig.subplots()
    _rank_axis(ax, groups)
    ax.axhline(1.0, color="k", linestyle=":", label="ideal  E = 1")
    baseline, per_series = _baseline_text(groups)
    for label, entry, rows in groups:
        name = f"{label} (P0 = {entry['baseline_ranks']})" if per_series else label
        _draw_series(ax, rows, "efficiency", name, ("efficiency_min", "efficiency_max"))
    top = max(r["efficiency_max"] for _, _, rows in groups for r in rows)
    ax.set_ylim(0.0, max(1.1, 1.05 * top))
    ax.set_ylabel(f"parallel efficiency  S / (P/P0),  {baseline}")
    ax.set_title(f"{mode.capitalize()} scaling: efficiency ({title})")
    _legend(ax, groups)
    return fig


def _karp_flatt_figure(groups, mode, title):
    fig = new_figure(height_in=LINE_FIGURE_HEIGHT_IN)
    ax = fig.subplots()
    _rank_axis(ax, groups)
    _, per_series = _baseline_text(groups)
    for label, entry, rows in groups:
        parallel = [r for r in rows if r["ranks"] > r["baseline_ranks"]]
        name = f"{label} (P0 = {entry['baseline_ranks']})" if per_series else label
        if parallel:
            _draw_series(ax, parallel, "karp_flatt", name)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_ylabel("serial fraction  e = (1/S − P0/P) / (1 − P0/P)")
    ax.set_title(f"Karp-Flatt serial fraction, {mode} scaling ({title})")
    _legend(ax, groups)
    return fig


def _breakdown_figure(groups, mode, title):
    fig = new_figure(width_in=4.8 * len(groups) + 1.6)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    for ax, (label, _, rows) in zip(axes[0], groups, strict=True):
        positions = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        hatches = ["//" if r.get("oversubscribed") else "" for r in rows]
        for key, name in PHASES:
            seconds = np.maximum([r[key] for r in rows], 0.0)
            ax.bar(positions, seconds, bottom=bottom, label=name, hatch=hatches)
            bottom += seconds
        ticks = [
            f"{r['ranks']}\n(oversub.)" if r.get("oversubscribed") else str(r["ranks"])
            for r in rows
        ]
        ax.set_xticks(positions, ticks)
        ax.set_xlabel("MPI ranks P")
        ax.set_title(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("seconds per epoch (median over repeats)")
    axes[0][0].set_ylim(0.0, 1.4 * axes[0][0].get_ylim()[1])  # room for the legend
    handles, labels = axes[0][0].get_legend_handles_labels()
    if any(r.get("oversubscribed") for _, _, rows in groups for r in rows):
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="//"))
        labels.append(HATCHED_LABEL)
    axes[0][0].legend(handles, labels, fontsize="x-small", loc="upper left")
    fig.suptitle(f"Where an epoch's time goes, {mode} scaling ({title})")
    return fig


def new_figure(width_in: float = 6.4, height_in: float = 4.8) -> Figure:
    """An empty figure on an Agg canvas, ``width_in`` x ``height_in`` inches."""
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path, note: str | None = None) -> Path:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; return the PNG path.

    ``note``, if given, is printed small under the axes, wrapped to the figure's width.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    bottom = 0.0
    if note:
        width = int(fig.get_figwidth() * NOTE_CHARS_PER_INCH)
        lines = [wrapped for line in note.splitlines() for wrapped in textwrap.wrap(line, width)]
        fig.text(0.01, 0.01, "\n".join(lines), fontsize="x-small", va="bottom")
        bottom = 0.015 + NOTE_LINE_HEIGHT_IN * len(lines) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(stem.with_suffix(".png"), dpi=150)
    fig.savefig(stem.with_suffix(".pdf"))
    return stem.with_suffix(".png")
