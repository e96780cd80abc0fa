"""Figures of a scaling study (matplotlib, Agg): each written as PNG and PDF.

- ``speedup``: measured speedup (median, bar = slowest..fastest repeat) against ranks,
  with the ideal line and the Amdahl (strong) or Gustafson (weak) fit;
- ``efficiency``: parallel efficiency against ranks, ideal = 1;
- ``karp_flatt``: the experimentally determined serial fraction against ranks;
- ``breakdown``: stacked bars of compute / communication / I/O / other seconds per epoch
  at each rank count, one panel per series.

Input is the dict of :func:`experiments.summary.summarize`. Figures are drawn on the
Agg canvas directly (no pyplot state), so this works on nodes without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments.fits import AmdahlFit, GustafsonFit
from experiments.summary import series_key, summarize

SPEEDUP_LABEL = {
    "strong": "speedup  T(1) / T(P)",
    "weak": "scaled speedup  P·T(1) / T(P)",
}
BREAKDOWN_NOTE = (
    "Phases are means over the ranks (points.csv also has the busiest rank's, *_max);\n"
    "waiting for slower ranks is inside communication; a negative 'other' is drawn as 0."
)
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
    if not summary["rows"]:
        return []
    title = title or out.name
    mode = summary["mode"]
    groups = _by_series(summary)
    return [
        save_figure(_speedup_figure(groups, mode, title), out / "speedup"),
        save_figure(_efficiency_figure(groups, mode, title), out / "efficiency"),
        save_figure(_karp_flatt_figure(groups, mode, title), out / "karp_flatt"),
        save_figure(_breakdown_figure(groups, mode, title), out / "breakdown", BREAKDOWN_NOTE),
    ]


def _by_series(summary: dict) -> list[tuple[str, dict, list[dict]]]:
    """(label, series entry, its summary rows sorted by ranks) per series."""
    groups = []
    for entry in summary["series"]:
        key = series_key(entry)
        rows = [r for r in summary["rows"] if series_key(r) == key]
        groups.append(("/".join(key), entry, sorted(rows, key=lambda r: r["ranks"])))
    return groups


def _rank_axis(ax, groups) -> np.ndarray:
    """Rank axis ticked at the measured rank counts (log2 when they span 8x or more).

    Returns the rank counts.
    """
    ranks = np.array(sorted({r["ranks"] for _, _, rows in groups for r in rows}))
    if ranks.max() >= 8 * ranks.min():
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(ranks, [str(p) for p in ranks])
    ax.set_xlabel("MPI ranks P")
    ax.grid(True, alpha=0.3)
    return ranks


def fitted_speedup(entry: dict, ranks) -> np.ndarray | None:
    """The series' fitted speedup at ``ranks``, on the same baseline as the measurements."""
    fit = entry.get("fit")
    if fit is None:
        return None
    ranks = np.asarray(ranks, dtype=float)
    base = float(entry["baseline_ranks"])
    if fit["law"] == "amdahl":
        law = AmdahlFit(fit["serial_fraction"], fit["t1_s"])
        return base * law.speedup(ranks) / law.speedup([base])[0]
    return GustafsonFit(fit["serial_fraction"]).speedup(ranks)


def _speedup_figure(groups, mode, title):
    fig = new_figure()
    ax = fig.subplots()
    ranks = _rank_axis(ax, groups)
    dense = np.geomspace(ranks.min(), ranks.max(), 64)
    ax.plot(dense, dense, "k:", label="ideal  S = P")
    for label, entry, rows in groups:
        x = np.array([r["ranks"] for r in rows])
        y = np.array([r["speedup"] for r in rows])
        spread = [y - [r["speedup_min"] for r in rows], [r["speedup_max"] for r in rows] - y]
        line = ax.errorbar(x, y, yerr=spread, marker="o", capsize=3, label=f"{label} measured")
        fitted = fitted_speedup(entry, dense)
        if fitted is not None:
            fit = entry["fit"]
            name = "Amdahl f" if fit["law"] == "amdahl" else "Gustafson a"
            ax.plot(
                dense,
                fitted,
                "--",
                color=line[0].get_color(),
                label=f"{label} {name} = {fit['serial_fraction']:.3f}",
            )
    if ranks.max() >= 8 * ranks.min():
        ax.set_yscale("log", base=2)
    ax.set_ylabel(SPEEDUP_LABEL[mode])
    ax.set_title(f"{mode.capitalize()} scaling: speedup ({title})")
    ax.legend(fontsize="small")
    return fig


def _efficiency_figure(groups, mode, title):
    fig = new_figure()
    ax = fig.subplots()
    _rank_axis(ax, groups)
    ax.axhline(1.0, color="k", linestyle=":", label="ideal  E = 1")
    for label, _, rows in groups:
        x = [r["ranks"] for r in rows]
        ax.plot(x, [r["efficiency"] for r in rows], marker="o", label=label)
    ax.set_ylim(0.0, max(1.1, *(r["efficiency"] * 1.05 for _, _, rows in groups for r in rows)))
    ax.set_ylabel("parallel efficiency  S(P) / P")
    ax.set_title(f"{mode.capitalize()} scaling: efficiency ({title})")
    ax.legend(fontsize="small")
    return fig


def _karp_flatt_figure(groups, mode, title):
    fig = new_figure()
    ax = fig.subplots()
    _rank_axis(ax, groups)
    for label, _, rows in groups:
        parallel = [r for r in rows if r["ranks"] > 1]
        ax.plot(
            [r["ranks"] for r in parallel],
            [r["karp_flatt"] for r in parallel],
            marker="o",
            label=label,
        )
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_ylabel("serial fraction  e = (1/S − 1/P) / (1 − 1/P)")
    ax.set_title(f"Karp-Flatt serial fraction, {mode} scaling ({title})")
    ax.legend(fontsize="small")
    return fig


def _breakdown_figure(groups, mode, title):
    fig = new_figure(width_in=4.8 * len(groups) + 1.6)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    for ax, (label, _, rows) in zip(axes[0], groups, strict=True):
        positions = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for key, name in PHASES:
            seconds = np.maximum([r[key] for r in rows], 0.0)
            ax.bar(positions, seconds, bottom=bottom, label=name)
            bottom += seconds
        ax.set_xticks(positions, [str(r["ranks"]) for r in rows])
        ax.set_xlabel("MPI ranks P")
        ax.set_title(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("seconds per epoch (median over repeats)")
    axes[0][0].set_ylim(0.0, 1.4 * axes[0][0].get_ylim()[1])  # room for the legend
    axes[0][0].legend(fontsize="x-small", loc="upper left")
    fig.suptitle(f"Where an epoch's time goes, {mode} scaling ({title})")
    return fig


def plot_model(table: list[dict], points: list[dict], out: Path) -> list[Path]:
    """Model curves beside the measured points; returns the PNG paths written.

    Parameters
    ----------
    table : model.csv rows (``mode``, ``strategy``, ``ranks``, ``time_s``, ``speedup``).
    points : the completed points.csv rows the model was fitted to.
    out : directory for ``model_speedup`` and ``model_time``.
    """
    mode = points[0]["mode"]
    measured = summarize(points, mode)["rows"]
    strategies = list(dict.fromkeys(row["strategy"] for row in table))
    colors = {name: f"C{i}" for i, name in enumerate(strategies)}
    written = []
    for key, label in (
        ("speedup", "speedup (model: vs. one rank without communication)"),
        ("time_s", "seconds per epoch"),
    ):
        fig = new_figure(width_in=12.0)
        axes = fig.subplots(1, 2)
        for ax, panel in zip(axes, ("strong", "weak"), strict=True):
            rows = [row for row in table if row["mode"] == panel]
            ranks = np.array(sorted({row["ranks"] for row in rows}))
            if key == "speedup":
                ax.plot(ranks, ranks, "k:", label="ideal")
            for strategy in strategies:
                mine = [row for row in rows if row["strategy"] == strategy]
                ax.plot(
                    [row["ranks"] for row in mine],
                    [row[key] for row in mine],
                    color=colors[strategy],
                    label=f"model: {strategy}",
                )
            if panel == mode:
                for strategy in dict.fromkeys(row["strategy"] for row in measured):
                    mine = [row for row in measured if row["strategy"] == strategy]
                    ax.plot(
                        [row["ranks"] for row in mine],
                        [row["speedup" if key == "speedup" else "time_median_s"] for row in mine],
                        "o",
                        color=colors.get(strategy, "k"),
                        label=f"measured: {strategy} (median)",
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(ranks[::2], [str(r) for r in ranks[::2]])
            ax.minorticks_off()
            ax.set_yscale("log", base=2 if key == "speedup" else 10)
            ax.set_xlabel("MPI ranks P")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{panel} scaling")
            ax.legend(fontsize="x-small")
        fig.suptitle(f"Alpha-beta performance model vs. measurements ({out.name})")
        written.append(save_figure(fig, out / f"model_{'speedup' if key == 'speedup' else 'time'}"))
    return written


def new_figure(width_in: float = 6.4) -> Figure:
    """An empty figure on an Agg canvas, ``width_in`` x 4.8 inches."""
    fig = Figure(figsize=(width_in, 4.8))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path, note: str | None = None) -> Path:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; return the PNG path.

    ``note``, if given, is printed small under the axes.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    if note:
        fig.text(0.01, 0.01, note, fontsize="x-small", va="bottom")
    fig.tight_layout(rect=(0, 0.07 if note else 0, 1, 1))
    fig.savefig(stem.with_suffix(".png"), dpi=150)
    fig.savefig(stem.with_suffix(".pdf"))
    return stem.with_suffix(".png")
