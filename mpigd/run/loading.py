"""Collective loading: every rank reads its own rows; any rank's failure fails them all."""

from __future__ import annotations

from mpigd.comm import RankInfo, agree
from mpigd.data import DatasetInfo, LocalRows, load_rank_rows, open_dataset, read_rows, row_range
from mpigd.errors import DataError, MpigdError


def load_local_rows(
    path: str,
    ranks: RankInfo,
    every_rank_needs_rows: bool = True,
    share: tuple[int, int] | None = None,
    what: str = "dataset path",
) -> tuple[DatasetInfo, LocalRows]:
    """Open the dataset at ``path`` and read this rank's contiguous row range.

    Collective. ``share = (part, parts)`` says which of ``parts`` equal row ranges this
    rank reads (default ``(rank, size)``); ``(0, 0)`` means no rows (a parameter server
    that does not compute). ``every_rank_needs_rows`` (training data) makes a dataset
    with fewer rows than parts an error; test data may leave some ranks with no rows.
    Raises the same MpigdError on every rank if any rank could not open, read or
    validate its part. What h5py raises on a file that breaks mid-read (OSError,
    KeyError, ValueError) is bad input too, reported as a DataError naming the path;
    anything else is a bug and aborts the job with its traceback. ``what`` names the
    path in messages (the flag that gave it).
    """
    part, parts = share or (ranks.rank, ranks.size)
    info = rows = error = None
    try:
        info = open_dataset(path, what)
        if parts == 0:
            rows = read_rows(info, 0, 0)
        elif every_rank_needs_rows:
            rows = load_rank_rows(info, part, parts)
        else:
            rows = read_rows(info, *row_range(info.n_rows, part, parts))
    except MpigdError as exc:
        error = exc
    except (OSError, KeyError, ValueError) as exc:
        error = DataError(f"cannot read dataset {path}: {type(exc).__name__}: {exc}")
    agree(ranks.comm, error)
    return info, rows
