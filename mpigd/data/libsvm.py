"""Import a libsvm/svmlight file as sparse (CSR) shards: in chunks, and on P ranks at once.

A line is ``LABEL [qid:Q] ID:VALUE ID:VALUE ...`` (``#`` starts a comment; blank and
comment lines hold no row). Lines are parsed by scikit-learn's svmlight parser, so a
file imports as ``sklearn.datasets.load_svmlight_file`` reads it: the same rows, column
ids and values (explicit zeros kept, ``qid`` ignored), stored as canonical CSR
(:mod:`mpigd.data.csr`). Feature ids must increase along a line (the parser refuses
repeated or unsorted ids: the stored rows need no sorting) and fit a C int (at most
``2**31 - 1``). Labels and values must be finite; a value too large for ``float32`` is
an error when that is the dtype. Every error names the line (from 1).

Ranges and chunks. The file's bytes are split evenly into one range per rank, and each
range into chunks of about ``chunk_bytes``; a line belongs to the range (or chunk)
holding its first byte, so ranks and chunks need no coordination. The ranges and chunks
are aligned to lines here and each chunk's bytes handed to the parser, rather than
calling ``load_svmlight_file(offset=, length=)``: with those, a comment or blank line
across a boundary makes the data line after it parsed by both neighbouring calls
(scikit-learn 1.9 skips its length test on lines without data), and aligning here also
counts each chunk's lines, which error messages need. A compressed file (``.gz``,
``.bz2``, which scikit-learn also opens by that extension) has no byte ranges: rank 0
reads it alone, in chunks.

Why scratch files. Shards split the rows as dense imports do (shard ``k`` holds rows
``[k*N//K, (k+1)*N//K)``), so ``N`` must be known before any shard gets its first row,
and so must what is decided over the whole file: whether ids are 0- or 1-based (as
scikit-learn's ``zero_based="auto"``: 1-based when no id is 0, decided over all chunks
of all ranks), ``d``, the task and label mapping (:func:`mpigd.data.importers.
decide_labels`, from every chunk's distinct labels). So each rank parses its range once
into raw scratch files beside the staged output (row ends, ids as written, values in the
dataset's dtype, labels); once the ranks have exchanged their counts, every rank makes
the same plan, and the rank that writes shard ``k`` copies its rows from the scratch
files by hyperslab, from whichever ranks parsed them (through the file system, which
the ranks writing one output directory share anyway), shifting ids and mapping labels
on the way. Parsing, the costly part, happens once; a counting pass would parse twice,
and keeping the rows in memory would bound the file by memory. The price is scratch
space about the size of the binary rows (12-16 bytes per nonzero), removed at the end.
The same steps with one rank are the serial import, so serial, chunked and parallel
imports write the same datasets byte for byte.

Memory per rank: a chunk's bytes and its parsed arrays (measured: about 5 times
``chunk_bytes`` at the default 64 MiB, above the ~200 MB the libraries take), a copy
block of the same order, the distinct labels while every label is an integer, and a
small record per chunk. Speed is the parser's: 5-20 MB/s of text per core on the
development machine (about 1 M nonzeros/s at best), the scratch round trip adding ~15%.

MPI reaches this module only as ``team`` (``rank``, ``size`` and the collective
``gather(value)``, every rank's picklable ``value`` in rank order; :class:`Alone` for a
serial import). Every rank fails together with the same message: errors found by one
rank are exchanged and raised everywhere; nothing is left at the output path.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import os
import shutil
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import islice

import numpy as np

from mpigd.data import csr
from mpigd.data.importers import class_ids, decide_labels
from mpigd.data.writer import SparseShardWriter, shard_paths, shard_sizes, staged_output
from mpigd.errors import DataError

#: Default chunk size (MiB of the input file parsed at a time).
CHUNK_MB = 64.0
#: The largest feature id scikit-learn's parser reads (it holds ids in a C int).
MAX_ID = 2**31 - 1
_SCRATCH = ".libsvm-scratch"
_SCAN_BYTES = 1 << 16  # read at a time while looking for the end of a line
#: fewest nonzeros a copy block holds, however small the chunks (HDF5 writes are costly)
COPY_MIN_ENTRIES = 1 << 16
#: scratch parts: name -> dtype (None: the dataset's dtype)
_PARTS = {"ends": np.int64, "ids": np.int64, "values": None, "labels": np.float64}
_READ_ERRORS = (OSError, EOFError, zlib.error)


class Alone:
    """The team of a serial import: one rank."""

    rank, size = 0, 1

    @staticmethod
    def gather(value) -> list:
        return [value]


@dataclass(frozen=True)
class _Chunk:
    """What a rank keeps of a parsed chunk, to find a line again later."""

    offset: int  # of its first byte in the (uncompressed) file
    size: int  # bytes
    first_line: int  # lines of this rank's range before it
    min_id: int  # smallest and largest feature id as written; -1 when it has none
    max_id: int


class _LineError(Exception):
    """A bad line: ``line`` counted from 0 within this rank's range; ``span`` more lines
    when the parser's complaint could not be pinned to one."""

    def __init__(self, line: int, what: str, span: int = 0):
        super().__init__(what)
        self.line, self.what, self.span = line, what, span


@dataclass(frozen=True)
class _Plan:
    """What every rank decided alike from all ranks' summaries."""

    rows: list[int]  # rows parsed by each rank, in rank order
    nnz: list[int]
    lines: list[int]
    max_ids: list[int]  # largest feature id as written, -1 when none
    base: int  # 0 or 1: the smallest feature id
    base_reason: str
    d: int
    task: str
    n_classes: int | None
    label_values: np.ndarray | None
    task_reason: str | None
    sizes: list[int]  # rows of each shard


def import_libsvm(
    path: str,
    out: str,
    *,
    shards: int,
    dtype: str,
    task: str | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
    n_features: int | None,
    zero_based: bool | None,
    zero_based_reason: str | None = None,
    chunk_bytes: int,
    attrs: dict,
    overwrite: bool,
    team=None,
) -> dict:
    """Collective over ``team`` (default: this process alone): import ``path`` into ``out``.

    ``out`` and ``shards`` as :func:`mpigd.data.writer.write_dataset`; ``zero_based``
    ``None`` detects the id base (1 when no id is 0), True or False fixes it
    (``zero_based_reason`` says why, for the summary); ``n_features`` fixes ``d`` (an id
    beyond it is an error); ``task``, ``n_classes`` and ``label_values`` as
    :func:`mpigd.data.importers.import_file` takes them, already checked. ``attrs`` are
    provenance attributes for every shard; ``feature_index_base`` (0 or 1, the id base
    used) and ``label_values`` (classification) are added.

    Returns the summary's libsvm part (files, rows, features, nnz, task, label values,
    the id base and why); raises the same DataError on every rank on bad input.
    """
    team = team or Alone()
    single = shards == 1 and out.endswith(".h5")
    with _staged_together(out, single, overwrite, team) as (staged, scratch):
        chunks, mine = _parse_mine(path, chunk_bytes, dtype, zero_based is False, scratch, team)
        everyone = team.gather(mine)
        _raise_parse_error(path, everyone)
        plan = _plan(path, everyone, shards, task, n_classes, label_values, n_features, zero_based)
        _check_width(path, plan, chunks, n_features, team)
        _check_labels(path, plan, everyone, scratch, team)
        error = None
        try:
            paths = [staged] if single else shard_paths(staged, shards)
            shard_attrs = {**attrs, "feature_index_base": plan.base}
            if plan.label_values is not None:
                shard_attrs["label_values"] = plan.label_values
            _write_mine(path, plan, paths, scratch, dtype, shard_attrs, chunk_bytes, team)
        except (OSError, RuntimeError) as exc:  # h5py reports some write failures so
            error = f"cannot write {out}: {exc}"
        _raise_first(team.gather(error))
    return {
        "files": [out] if single else shard_paths(out, shards),
        "rows": sum(plan.rows),
        "features": plan.d,
        "nnz": sum(plan.nnz),
        "sparse": True,
        "task": plan.task,
        "task_reason": plan.task_reason,
        "n_classes": plan.n_classes,
        "label_values": plan.label_values,
        "zero_based": plan.base == 0,
        "zero_based_reason": zero_based_reason or plan.base_reason,
        "ranks": team.size,
    }


@contextmanager
def _staged_together(out: str, single: bool, overwrite: bool, team) -> Iterator[tuple[str, str]]:
    """Collective: rank 0 stages the output (:func:`staged_output`) and a scratch
    directory in it; every rank gets both paths. On success rank 0 removes the scratch
    and moves the output into place; on any error it removes everything."""
    with ExitStack() as stack:
        staged = scratch = error = None
        if team.rank == 0:
            try:
                staged = stack.enter_context(
                    staged_output(out, directory=not single, overwrite=overwrite)
                )
                scratch = os.path.join(os.path.dirname(staged) if single else staged, _SCRATCH)
                os.mkdir(scratch)
            except DataError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"cannot create {out}: {exc}"
        staged, scratch, error = team.gather((staged, scratch, error))[0]
        if error is not None:
            raise DataError(error)
        yield staged, scratch
        if team.rank == 0:
            shutil.rmtree(scratch)


def _raise_first(errors: list[str | None]) -> None:
    """Raise the lowest rank's error, if any rank had one (every rank sees the same list)."""
    for error in errors:
        if error is not None:
            raise DataError(error)


# Parsing: each rank its range, chunk by chunk, into its scratch files.


def _parse_mine(
    path: str, chunk_bytes: int, dtype: str, one_based: bool, scratch: str, team
) -> tuple[list[_Chunk], dict]:
    """Parse this rank's range into its scratch files.

    Returns the chunk records and the summary the ranks exchange: ``rows``, ``nnz``,
    ``lines``, ``min_id``/``max_id`` (-1 when no ids), ``values`` (sorted distinct
    labels, ``None`` once a label is not an integer), ``fractional`` (first such label:
    local row, value), ``first_label``, and ``error`` (``None``, a message, or a bad
    line as ``(line, what, span)``).
    """
    try:
        with _open(path) as f:
            lo, hi = _my_range(f, path, team)
            return _parse_range(f, lo, hi, chunk_bytes, dtype, one_based, scratch, team.rank)
    except _LineError as exc:
        return [], {"error": (exc.line, exc.what, exc.span)}
    except _READ_ERRORS as exc:
        return [], {"error": f"cannot import {path}: {type(exc).__name__}: {exc}"}


def _open(path: str):
    """The file's bytes: decompressed for ``.gz`` and ``.bz2``, as scikit-learn opens it."""
    extension = os.path.splitext(path)[1]
    if extension == ".gz":
        return gzip.open(path, "rb")
    if extension == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def _compressed(path: str) -> bool:
    return os.path.splitext(path)[1] in (".gz", ".bz2")


def _my_range(f, path: str, team) -> tuple[int, int | None]:
    """This rank's bytes ``[lo, hi)`` (``hi`` None: to the end of a compressed stream).

    Rank ``r`` of ``P`` holds the lines whose first byte lies in
    ``[r*S//P, (r+1)*S//P)`` for a file of ``S`` bytes; a compressed file is rank 0's.
    """
    if _compressed(path):
        return (0, None) if team.rank == 0 else (0, 0)
    size = os.fstat(f.fileno()).st_size
    lo, hi = (_line_start(f, k * size // team.size, size) for k in (team.rank, team.rank + 1))
    return lo, hi


def _line_start(f, position: int, size: int) -> int:
    """The first position at or after ``position`` that starts a line (``size`` if none)."""
    if position <= 0 or position >= size:
        return max(0, min(position, size))
    f.seek(position - 1)
    while True:
        block = f.read(_SCAN_BYTES)
        if not block:
            return size
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline  # block[0] is the byte at position - 1
        position += len(block)


def _chunks(f, lo: int, hi: int | None, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of whole lines of ``[lo, hi)``, about ``chunk_bytes`` at a time
    (a longer line is a chunk of its own); ``hi`` None reads to the end."""
    f.seek(lo)
    offset = position = lo
    carry = b""
    while True:
        want = chunk_bytes if hi is None else min(chunk_bytes, hi - position)
        block = f.read(want) if want > 0 else b""
        position += len(block)
        if not block:
            if carry:
                yield offset, carry
            return
        buffer = carry + block if carry else block
        cut = buffer.rfind(b"\n") + 1
        if cut == 0:
            carry = buffer
            continue
        yield offset, buffer[:cut]
        offset += cut
        carry = buffer[cut:]


def _parse_range(
    f, lo: int, hi: int | None, chunk_bytes: int, dtype: str, one_based: bool, scratch: str,
    rank: int,
) -> tuple[list[_Chunk], dict]:  # fmt: skip
    """:func:`_parse_mine` once the range is known."""
    chunks: list[_Chunk] = []
    lines = rows = nnz = 0
    values, fractional, first_label = np.empty(0), None, None
    with ExitStack() as stack:
        out = {
            part: stack.enter_context(open(_scratch_path(scratch, rank, part), "wb"))
            for part in _PARTS
        }
        for offset, data in _chunks(f, lo, hi, chunk_bytes):
            X, y, stored = _parse_chunk(data, dtype, one_based, lines)
            (X.indptr[1:].astype(np.int64) + nnz).tofile(out["ends"])
            X.indices.astype(np.int64, copy=False).tofile(out["ids"])
            stored.tofile(out["values"])
            y.tofile(out["labels"])
            ids = X.indices
            low, high = (int(ids.min()), int(ids.max())) if ids.size else (-1, -1)
            chunks.append(_Chunk(offset, len(data), lines, low, high))
            if first_label is None and y.size:
                first_label = float(y[0])
            if fractional is None:
                where = np.flatnonzero(y != np.round(y))
                if where.size:
                    fractional, values = (rows + int(where[0]), float(y[where[0]])), None
                else:
                    values = np.union1d(values, y)
            lines += data.count(b"\n")
            rows += X.shape[0]
            nnz += X.nnz
    mins = [c.min_id for c in chunks if c.min_id >= 0]
    return chunks, {
        "rows": rows,
        "nnz": nnz,
        "lines": lines,
        "min_id": min(mins, default=-1),
        "max_id": max((c.max_id for c in chunks), default=-1),
        "values": values,
        "fractional": fractional,
        "first_label": first_label,
        "error": None,
    }


def _scratch_path(scratch: str, rank: int, part: str) -> str:
    return os.path.join(scratch, f"rank-{rank:05d}.{part}")


def _parse_chunk(data: bytes, dtype: str, one_based: bool, first_line: int):
    """The chunk's rows (csr_matrix, ids as written), labels (float64) and values in
    ``dtype``; a bad line raises :class:`_LineError` (line within the range)."""
    try:
        X, y = _sklearn_parse(data)
    except (ValueError, OverflowError) as exc:
        found = _first_problem(data, dtype, one_based)
        if found is None:  # not expected: the checks below mirror the parser's
            span = max(data.count(b"\n") - 1, 0)
            raise _LineError(first_line, f"{exc} (scikit-learn's parser)", span) from exc
        raise _LineError(first_line + found[0], found[1]) from exc
    with np.errstate(over="ignore"):
        stored = X.data.astype(dtype)
    bad = [np.flatnonzero(~np.isfinite(y))[:1]]
    positions = [np.flatnonzero(~np.isfinite(stored))[:1]]
    if one_based:
        positions.append(np.flatnonzero(X.indices == 0)[:1])
    bad += [np.searchsorted(X.indptr, p, side="right") - 1 for p in positions]
    rows = np.concatenate(bad)
    if rows.size:
        number, tokens = _line_of_row(data, int(rows.min()))
        what = _problem(tokens, dtype, one_based) or "a label or value is not finite"
        raise _LineError(first_line + number, what)
    return X, y, stored


def _sklearn_parse(data: bytes):
    """``(X, y)`` of whole lines, ids as written (scikit-learn's parser)."""
    from sklearn.datasets import load_svmlight_file

    return load_svmlight_file(io.BytesIO(data), dtype=np.float64, zero_based=True)


# Lines, for messages: read as scikit-learn's parser reads them, in Python (error paths only).


def _data_lines(data: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """``(line from 0, tokens)`` of each line of ``data`` that holds a row."""
    for number, line in enumerate(data.split(b"\n")):
        comment = line.find(b"#")
        tokens = (line if comment < 0 else line[:comment]).split()
        if tokens:
            yield number, tokens


def _line_of_row(data: bytes, row: int) -> tuple[int, list[bytes]]:
    """The line (from 0 within ``data``) and tokens of the ``row``-th row of ``data``."""
    return next(islice(_data_lines(data), row, None))


def _first_problem(data: bytes, dtype: str, one_based: bool) -> tuple[int, str] | None:
    """The first bad line of ``data`` (from 0) and what is wrong with it, or None."""
    for number, tokens in _data_lines(data):
        what = _problem(tokens, dtype, one_based)
        if what is not None:
            return number, what
    return None


def _problem(tokens: list[bytes], dtype: str, one_based: bool) -> str | None:
    """What is wrong with a line of tokens, in the parser's order of reading; None if
    nothing is."""
    label = _number(tokens[0])
    if label is None:
        return f"label {_text(tokens[0])} is not a number"
    if not math.isfinite(label):
        return f"label {_text(tokens[0])} is not finite"
    features = tokens[1:]
    if features and features[0].startswith(b"qid"):
        if b":" not in features[0]:
            return f"{_text(features[0])} is not qid:VALUE"
        features = features[1:]
    previous = -1
    for token in features:
        id_text, colon, value_text = token.partition(b":")
        if not colon:
            return f"{_text(token)} is not ID:VALUE"
        try:
            index = int(id_text)
        except ValueError:
            return f"feature id {_text(id_text)} is not an integer"
        if index < 0:
            return f"feature id {index} is negative"
        if index > MAX_ID:
            return f"feature id {index} is larger than {MAX_ID}, the largest the parser reads"
        if index == 0 and one_based:
            return "feature id 0, but ids start at 1 (--no-zero-based); omit it to detect the base"
        if index == previous:
            return f"feature id {index} appears twice; each id may appear once per line"
        if index < previous:
            return f"feature ids must increase along a line, but {index} comes after {previous}"
        value = _number(value_text)
        if value is None:
            return f"feature {index} has value {_text(value_text)}, not a number"
        if not math.isfinite(value):
            return f"feature {index} has value {_text(value_text)}; values must be finite"
        with np.errstate(over="ignore"):
            if not np.isfinite(np.dtype(dtype).type(value)):
                return (
                    f"feature {index} has value {_text(value_text)}, beyond the range of "
                    f"{dtype} (--dtype float64 holds it)"
                )
        previous = index
    return None


def _number(text: bytes) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _text(token: bytes) -> str:
    """A token as messages show it."""
    return repr(token.decode("utf-8", "replace"))


def _reread(path: str, chunk: _Chunk) -> bytes:
    with _open(path) as f:
        f.seek(chunk.offset)
        return f.read(chunk.size)


# Deciding, alike on every rank, from every rank's summary.


def _raise_parse_error(path: str, everyone: list[dict]) -> None:
    """Raise the first bad line of the file (the lowest failing rank's), numbered over
    the whole file: every rank before it read its range to the end."""
    lines_before = 0
    for summary in everyone:
        error = summary["error"]
        if error is None:
            lines_before += summary["lines"]
            continue
        if isinstance(error, str):
            raise DataError(error)
        line, what, span = error
        first = lines_before + line + 1
        where = f"line {first}" if not span else f"lines {first}..{first + span}"
        raise DataError(f"cannot parse {path} as libsvm/svmlight: {where}: {what}")


def _plan(
    path: str,
    everyone: list[dict],
    shards: int,
    task: str | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
    n_features: int | None,
    zero_based: bool | None,
) -> _Plan:
    """The import's plan from the ranks' summaries (the same on every rank)."""
    rows = [s["rows"] for s in everyone]
    if not sum(rows):
        raise DataError(f"{path} contains no data rows")
    with_ids = [s for s in everyone if s["max_id"] >= 0]
    if zero_based is not None:
        base = 0 if zero_based else 1
        reason = f"given (--{'' if zero_based else 'no-'}zero-based)"
    elif with_ids and min(s["min_id"] for s in with_ids) >= 1:
        base, reason = 1, "detected: no feature id is 0"
    else:
        base = 0
        reason = "detected: a feature id is 0" if with_ids else "no feature ids in the file"
    if n_features is not None:
        d = n_features
    elif with_ids:
        d = max(s["max_id"] for s in with_ids) - base + 1
    else:
        raise DataError(f"{path} has no features (no ID:VALUE pair); give --features D")
    fractional, before = None, 0
    for s in everyone:
        if s["fractional"] is not None:
            fractional = (before + s["fractional"][0], s["fractional"][1])
            break
        before += s["rows"]
    values = None
    if fractional is None:
        values = np.unique(np.concatenate([s["values"] for s in everyone]))
    example = next(s["first_label"] for s in everyone if s["rows"])
    task, n_classes, label_values, task_reason = decide_labels(
        path, values, fractional, example, task, n_classes, label_values
    )
    return _Plan(
        rows=rows,
        nnz=[s["nnz"] for s in everyone],
        lines=[s["lines"] for s in everyone],
        max_ids=[s["max_id"] for s in everyone],
        base=base,
        base_reason=reason,
        d=d,
        task=task,
        n_classes=n_classes,
        label_values=label_values,
        task_reason=task_reason,
        sizes=shard_sizes(sum(rows), shards),
    )


def _check_width(
    path: str, plan: _Plan, chunks: list[_Chunk], n_features: int | None, team
) -> None:
    """Collective: with ``n_features`` given, raise at the first line with an id beyond
    it (the rank holding that line finds it by parsing its chunk again)."""
    limit = plan.d + plan.base  # ids as written must be below it
    owners = [r for r, high in enumerate(plan.max_ids) if high >= limit]
    if n_features is None or not owners:
        return

    def find() -> str:
        chunk = next(c for c in chunks if c.max_id >= limit)
        data = _reread(path, chunk)
        X, _ = _sklearn_parse(data)
        position = int(np.flatnonzero(X.indices >= limit)[0])
        number, _ = _line_of_row(data, csr.row_of(X.indptr, position))
        line = sum(plan.lines[: owners[0]]) + chunk.first_line + number + 1
        return (
            f"{path} line {line} has feature index {int(X.indices[position])} but only "
            f"{plan.d} features are expected (ids {plan.base}..{plan.d - 1 + plan.base})"
        )

    _raise_found(path, owners[0], find, team)


def _check_labels(path: str, plan: _Plan, everyone: list[dict], scratch: str, team) -> None:
    """Collective: raise at the first label that is none of the pinned label values
    (the rank holding it scans its scratch labels)."""
    if plan.label_values is None:
        return
    owners = [
        r for r, s in enumerate(everyone) if np.setdiff1d(s["values"], plan.label_values).size
    ]
    if not owners:
        return
    owner = owners[0]

    def find() -> str:
        first_row, block = sum(plan.rows[:owner]), 1 << 20
        for lo in range(0, plan.rows[owner], block):
            count = min(block, plan.rows[owner] - lo)
            labels = _read(scratch, owner, "labels", np.float64, lo, count)
            try:
                class_ids(path, labels, plan.label_values, first_row=first_row + lo)
            except DataError as exc:
                return str(exc)
        raise AssertionError("a label missing from the label values was not found")

    _raise_found(path, owner, find, team)


def _raise_found(path: str, owner: int, find, team) -> None:
    """Collective: rank ``owner`` describes an error with ``find()``; every rank raises it."""
    message = None
    if team.rank == owner:
        try:
            message = find()
        except _READ_ERRORS as exc:
            message = f"cannot import {path}: {type(exc).__name__}: {exc}"
    raise DataError(team.gather(message)[owner])


# Writing: each shard by one rank, copied from the scratch files of the ranks that parsed it.


def _write_mine(
    path: str,
    plan: _Plan,
    paths: list[str],
    scratch: str,
    dtype: str,
    attrs: dict,
    chunk_bytes: int,
    team,
) -> None:
    """Write this rank's shards: shards ``k`` with ``k * P // K == rank``, a run of
    consecutive shards, rows streamed in blocks of about ``chunk_bytes`` (at least
    :data:`COPY_MIN_ENTRIES` nonzeros)."""
    mine = [k for k in range(len(paths)) if k * team.size // len(paths) == team.rank]
    if not mine:
        return
    bounds = np.cumsum([0, *plan.sizes])
    lo, hi = int(bounds[mine[0]]), int(bounds[mine[-1] + 1])
    sizes = [plan.sizes[k] for k in mine]
    budget = max(COPY_MIN_ENTRIES, chunk_bytes // 16)  # nonzeros: 16 bytes each read
    with SparseShardWriter(
        [paths[k] for k in mine], sizes, plan.d, dtype, plan.task, plan.n_classes, attrs
    ) as writer:
        for X, labels in _blocks(plan, scratch, dtype, lo, hi, budget):
            y = labels if plan.label_values is None else class_ids(path, labels, plan.label_values)
            writer.write(X, y)


def _blocks(
    plan: _Plan, scratch: str, dtype: str, lo: int, hi: int, budget: int
) -> Iterator[tuple]:
    """``(csr_matrix, labels)`` of global rows ``[lo, hi)`` in order, read from the
    scratch files, ids shifted to start at 0; at most ``budget`` nonzeros a block (or
    one row)."""
    first = np.cumsum([0, *plan.rows])
    index_dtype = np.int32 if plan.d <= 2**31 else np.int64
    for rank in range(len(plan.rows)):
        a, b = max(lo, first[rank]) - first[rank], min(hi, first[rank + 1]) - first[rank]
        if a >= b:
            continue
        start = 0 if a == 0 else int(_read(scratch, rank, "ends", np.int64, a - 1, 1)[0])
        while a < b:
            ends = _read(scratch, rank, "ends", np.int64, a, min(b - a, budget))
            take = max(1, int(np.searchsorted(ends - start, budget, side="right")))
            ends = ends[:take]
            count = int(ends[-1]) - start
            ids = _read(scratch, rank, "ids", np.int64, start, count)
            values = _read(scratch, rank, "values", np.dtype(dtype), start, count)
            indptr = np.concatenate(([0], ends - start))
            X = csr.assemble((take, plan.d), values, (ids - plan.base).astype(index_dtype), indptr)
            yield X, _read(scratch, rank, "labels", np.float64, a, take)
            a, start = a + take, int(ends[-1])


def _read(scratch: str, rank: int, part: str, dtype, first: int, count: int) -> np.ndarray:
    """Entries ``[first, first + count)`` of a scratch part."""
    dtype = np.dtype(dtype)
    return np.fromfile(
        _scratch_path(scratch, rank, part), dtype=dtype, count=count, offset=first * dtype.itemsize
    )
