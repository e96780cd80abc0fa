"""Experiments on mpigd: scaling studies, benchmarks, the performance model.

Run them from the repository root as modules, e.g. ``python -m experiments.scaling``.
They launch ``mpigd`` through its command line and read its run records; none of them
reaches into training internals.
"""
