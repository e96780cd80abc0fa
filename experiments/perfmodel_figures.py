"""Figures of the performance model (:mod:`experiments.perfmodel`), drawn from its outputs.

- ``model_speedup``: modelled speedup against ranks, vs. the model's one-rank time
  without communication (``baseline_s`` in model.json), with the ideal line and the
  measured medians on the same baseline;
- ``model_time``: modelled seconds per epoch against ranks, with the measured medians
  and, where the study has enough rank counts, each held-out prediction (the fit made
  without that rank count).

Each has a strong and a weak scaling panel whose titles give the rows they assume
(``total_rows``, ``rows_per_rank``). Curves are solid over the study's fitted rank
counts and dashed, on a shaded ground, where they are extrapolated; each strategy has
its own hollow marker, so curves that coincide stay visible. The note under the axes
is model.json's ``validation``: the held-out errors, or that there was no held-out
validation.

Input is model.json (as a dict) and model.csv (as rows), nothing else.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from experiments.plots import new_figure, save_figure

#: Marker and size of each strategy's curve: nested hollow shapes stay visible on top
#: of each other.
MARKERS = {"allreduce": ("o", 8.0), "ps-sync": ("s", 6.0), "ps-async": ("^", 4.5)}
NOTE = (
    "Dashed on grey: extrapolated. Speedup baseline: the model's 1-rank time without"
    " communication, c N + r0; the measured medians are drawn on the same baseline."
)


def plot_model(record: dict, table: list[dict], out: Path) -> list[Path]:
    """Draw ``model_speedup`` and ``model_time`` into ``out``; return the PNG paths.

    Parameters
    ----------
    record : model.json: ``mode``, ``model``, ``backend``, ``fitted_ranks``, ``commbench_ranks``,
        ``total_rows``, ``rows_per_rank``, ``baseline_s``, ``fit_residuals``,
        ``held_out``, ``validation``.
    table : model.csv rows (``mode``, ``strategy``, ``ranks``, ``time_s``, ``speedup``).
    out : the study directory.
    """
    written = []
    for key, stem, label in (
        ("speedup", "model_speedup", "speedup (vs. modelled 1-rank time)"),
        ("time_s", "model_time", "seconds per epoch"),
    ):
        fig = new_figure(width_in=12.0)
        for ax, panel in zip(fig.subplots(1, 2), ("strong", "weak"), strict=True):
            _panel(ax, record, [row for row in table if row["mode"] == panel], panel, key)
            ax.set_ylabel(label)
        fitted = record["fitted_ranks"]
        fig.suptitle(
            f"Alpha-beta model of {record['model']}/{record['backend']} ({out.name}), "
            f"fitted at P = {', '.join(map(str, fitted))} "
            f"(collectives: commbench at P = {', '.join(map(str, record['commbench_ranks']))})"
        )
        misfit = "" if record.get("fits", True) else (
            f"THE MODEL DOES NOT FIT: it misses its own fitted points by up to "
            f"{100 * record['worst_residual']:.0f}%. ")  # fmt: skip
        note = textwrap.fill(f"{misfit}{record['validation']} {NOTE}", width=180)
        written.append(save_figure(fig, out / stem, note))
    return written


def _panel(ax, record: dict, rows: list[dict], panel: str, key: str) -> None:
    """One scaling mode: model curves, extrapolated part, and what was measured in it."""
    ranks = np.array(sorted({row["ranks"] for row in rows}))
    low, high = min(record["fitted_ranks"]), max(record["fitted_ranks"])
    left, right = ranks.min() / 1.4, ranks.max() * 1.4
    ax.set_xlim(left, right)
    if high < ranks.max():
        ax.axvspan(high, right, color="0.92", zorder=0, label=f"extrapolation (P > {high})")
    if low > ranks.min():
        ax.axvspan(left, low, color="0.92", zorder=0)
    if key == "speedup":
        ax.plot(ranks, ranks, "k:", label="ideal")
    measured = {check["strategy"] for check in record["fit_residuals"]}
    for i, strategy in enumerate(dict.fromkeys(row["strategy"] for row in rows)):
        mine = [row for row in rows if row["strategy"] == strategy]
        marker, size = MARKERS.get(strategy, ("D", 5.0))
        style = {"color": f"C{i}", "marker": marker, "markersize": size, "mfc": "none"}
        inside = [row for row in mine if low <= row["ranks"] <= high]
        label = f"model: {strategy}" + ("" if strategy in measured else " (not measured)")
        ax.plot(_xs(inside), _ys(inside, key), "-", label=label, **style)
        for side in (
            [r for r in mine if r["ranks"] >= high],
            [r for r in mine if r["ranks"] <= low],
        ):
            ax.plot(_xs(side), _ys(side, key), "--", **style)
        if panel == record["mode"]:
            _measured(ax, record, strategy, key, style)
    ax.set_xscale("log", base=2)
    ticks = [r for r in ranks if np.log2(r) % 2 == 0]  # powers of 4: room for the labels
    ax.set_xticks(ticks, [str(r) for r in ticks])
    ax.minorticks_off()
    ax.set_yscale("log", base=2 if key == "speedup" else 10)
    ax.set_xlabel("MPI ranks P")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    if panel == "strong":
        title = f"strong scaling: N = {record['total_rows']:,.0f} rows in all"
    else:
        title = f"weak scaling: {record['rows_per_rank']:,.0f} rows per rank"
    if panel != record["mode"]:
        title += f"\n(model only: the study measured {record['mode']} scaling)"
    ax.set_title(title, fontsize="medium")


def _measured(ax, record: dict, strategy: str, key: str, style: dict) -> None:
    """The measured medians of ``strategy`` (filled) and, on the time panel, its held-out
    predictions (crosses); only points with the rows the panel assumes."""
    mode = record["mode"]
    measured = [c for c in record["fit_residuals"] if c["strategy"] == strategy]
    measured = [c for c in measured if _same_rows(record, c)]
    if not measured:
        return
    work = np.array([c["ranks"] if mode == "weak" else 1.0 for c in measured])
    seconds = np.array([c["measured_s"] for c in measured])
    ys = seconds if key == "time_s" else work * record["baseline_s"][mode] / seconds
    ax.plot(
        [c["ranks"] for c in measured],
        ys,
        linestyle="none",
        marker=style["marker"],
        markersize=style["markersize"] + 3,
        color=style["color"],
        markeredgecolor="k",
        label=f"measured: {strategy} (median)",
        zorder=4,
    )
    crowded = [c for c in record.get("oversubscribed", []) if c["strategy"] == strategy]
    crowded = [c for c in crowded if _same_rows(record, c)]
    if crowded:
        work = np.array([c["ranks"] if mode == "weak" else 1.0 for c in crowded])
        seconds = np.array([c["measured_s"] for c in crowded])
        ax.plot(
            [c["ranks"] for c in crowded],
            seconds if key == "time_s" else work * record["baseline_s"][mode] / seconds,
            linestyle="none",
            marker=style["marker"],
            markersize=style["markersize"] + 3,
            markerfacecolor="white",
            markeredgecolor=style["color"],
            label=f"measured: {strategy}, oversubscribed (not fitted)",
            zorder=4,
        )
    held = [c for c in record["held_out"] if c["strategy"] == strategy and _same_rows(record, c)]
    if key == "time_s" and held:
        ax.plot(
            [c["ranks"] for c in held],
            [c["predicted_s"] for c in held],
            linestyle="none",
            marker="x",
            markersize=9,
            color=style["color"],
            label=f"held-out prediction: {strategy} (fit without that P)",
            zorder=5,
        )


def _same_rows(record: dict, check: dict) -> bool:
    """Whether a measured point has the rows its mode's panel assumes."""
    if record["mode"] == "strong":
        return abs(check["rows"] - record["total_rows"]) < 0.5
    return abs(check["rows"] / check["ranks"] - record["rows_per_rank"]) < 0.5


def _xs(rows: list[dict]) -> list[int]:
    return [row["ranks"] for row in rows]


def _ys(rows: list[dict], key: str) -> list[float]:
    return [row[key] for row in rows]
