"""Whether each point of a scaling study had its cores to itself, and warnings when not.

The harness means one MPI rank to be one core (it limits BLAS, OpenMP and Numba to one
thread). A run whose node held more ranks than cores is *oversubscribed*: its ranks take
turns on the cores, so its time measures time-slicing rather than the code, and the
speedup and efficiency drawn from it are artefacts (4 ranks on 2 cores look like an
efficiency of 0.36). A run that started while other processes kept the cores busy is
*loaded*: they take cores, caches and memory bandwidth from its ranks.

What the harness records per run, just before launching it (:func:`launch_facts`, kept
in the run directory's ``harness.json`` and copied into points.csv):

- ``cores``: CPUs the harness may run on (``os.sched_getaffinity``, or ``os.cpu_count``
  where that does not exist), taken as every node's core count;
- ``load_1min``: the 1-minute load average (``os.getloadavg``). The study's own previous
  run is still in it (it decays over minutes), so it is context, not the verdict;
- ``busy_cores``: cores kept busy by other processes over the :data:`BUSY_WINDOW_S`
  seconds before the launch, from ``/proc/stat`` over the CPUs in ``cores`` (Linux;
  ``None`` elsewhere). The previous run has exited by then: this is other work;
- ``cpu_binding``: the binding the launcher was asked for (``-bind-to``/``--bind-to``/
  ``--cpu-bind`` in its arguments, or ``HYDRA_BINDING``, ``OMPI_MCA_hwloc_base_binding_policy``,
  ``SLURM_CPU_BIND`` in the environment); ``None`` when not set (the launcher's default).

From the run's own record, ``ranks_per_node`` is the most ranks on one host (run.json
``hosts``). The marks (:func:`marks`): ``oversubscribed`` when ``ranks_per_node > cores``,
``loaded`` when ``busy_cores >= BUSY_CORES``; ``None`` where a fact is unknown.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

#: Seconds over which the CPU time of other processes is sampled before a launch.
BUSY_WINDOW_S = 0.5
#: Other processes busy on this many cores (or more) before a launch mark the run loaded.
BUSY_CORES = 0.5
#: Environment variables that ask MPI launchers for a CPU binding (MPICH, Open MPI, Slurm).
BINDING_VARIABLES = ("HYDRA_BINDING", "OMPI_MCA_hwloc_base_binding_policy", "SLURM_CPU_BIND")
#: Launcher options that set a CPU binding; the value follows them (or ``=``).
BINDING_OPTIONS = ("-bind-to", "--bind-to", "--cpu-bind", "--cpu_bind")
PROC_STAT = Path("/proc/stat")


def cores_available() -> int:
    """CPUs this process may run on (its affinity mask; the machine's count without one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cores(window_s: float = BUSY_WINDOW_S) -> float | None:
    """Cores (of this process's CPUs) that other processes kept busy over ``window_s``.

    Sleeps ``window_s`` seconds between two reads of ``/proc/stat``: busy is everything
    but idle and I/O wait. ``None`` where ``/proc/stat`` cannot be read (not Linux).
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    before = _cpu_jiffies(cpus)
    if before is None:
        return None
    time.sleep(window_s)
    after = _cpu_jiffies(cpus)
    if after is None:
        return None
    total = after[0] - before[0]
    return (after[1] - before[1]) / total * len(cpus) if total > 0 and cpus else 0.0


def _cpu_jiffies(cpus) -> tuple[int, int] | None:
    """(all, busy) jiffies summed over the CPUs ``cpus`` (every CPU when None)."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    total = busy = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        jiffies = [int(value) for value in values[:8]]  # user .. steal; guest is in user
        total += sum(jiffies)
        busy += sum(jiffies) - jiffies[3] - jiffies[4]  # less idle and iowait
    return total, busy


def cpu_binding(launcher_args, environ=os.environ) -> str | None:
    """The CPU binding the launcher was asked for, as ``option value``; None if not set."""
    args = list(launcher_args)
    for i, arg in enumerate(args):
        for option in BINDING_OPTIONS:
            if arg == option and i + 1 < len(args):
                return f"{option} {args[i + 1]}"
            if arg.startswith(option + "="):
                return arg.replace("=", " ", 1)
    for name in BINDING_VARIABLES:
        if environ.get(name):
            return f"{name}={environ[name]}"
    return None


def launch_facts(launcher_args) -> dict:
    """What the machine looks like just before a launch (takes ``BUSY_WINDOW_S`` seconds)."""
    return {
        "cores": cores_available(),
        "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "busy_cores": busy_cores(),
        "cpu_binding": cpu_binding(launcher_args),
    }


def ranks_per_node(hosts) -> int | None:
    """The most ranks on one host, from run.json's per-rank ``hosts``; None if unknown."""
    counts = Counter(hosts or ())
    return max(counts.values()) if counts else None


def marks(cores, per_node, busy) -> dict:
    """``oversubscribed`` and ``loaded`` of one run (None where a fact is unknown)."""
    return {
        "oversubscribed": None if cores is None or per_node is None else per_node > cores,
        "loaded": None if busy is None else busy >= BUSY_CORES,
    }


def warnings(points: list[dict]) -> list[str]:
    """Console and summary.json warnings about the completed points' marks.

    ``points`` are points.csv rows (with ``ranks``, ``repeat``, ``cores``,
    ``ranks_per_node``, ``busy_cores`` and the marks). One line per kind of problem.
    """
    done = [p for p in points if p.get("status") == "completed"]
    lines = []
    crowded = [p for p in done if p.get("oversubscribed")]
    if crowded:
        where = sorted({(p["ranks"], p["ranks_per_node"], p["cores"]) for p in crowded})
        lines.append(
            f"WARNING: {len(crowded)} of {len(done)} runs oversubscribed the cores ("
            + ", ".join(f"P={r}: {n} ranks per node on {c} cores" for r, n, c in where)
            + "): their ranks took turns on cores, so their times, speedups and efficiencies "
            "measure time-slicing, not the code. Marked hollow in the figures and "
            "oversubscribed=True in points.csv and summary.csv."
        )
    loaded = [p for p in done if p.get("loaded")]
    if loaded:
        busiest = max(p["busy_cores"] for p in loaded)
        lines.append(
            f"WARNING: {len(loaded)} of {len(done)} runs started on a loaded machine (other "
            f"processes kept up to {busiest:.1f} of {loaded[0]['cores']} cores busy): "
            + ", ".join(
                f"{p['strategy']}/{p['model']}/{p['backend']} P={p['ranks']} repeat {p['repeat']}"
                for p in loaded
            )
            + ". Their times are inflated by sharing; loaded=True in points.csv, counted in "
            "summary.csv's loaded_repeats."
        )
    unknown = [p for p in done if p.get("oversubscribed") is None]
    if unknown:
        lines.append(
            f"NOTE: for {len(unknown)} runs the cores per node or ranks per node were not "
            "recorded (runs from an older harness): whether they were oversubscribed is unknown."
        )
    return lines
