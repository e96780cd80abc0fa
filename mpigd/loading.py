"""Collective loading: every rank reads its own rows; any rank's failure fails them all."""

from __future__ import annotations

from mpigd.comm import RankInfo, agree
from mpigd.data import DatasetInfo, LocalRows, load_rank_rows, open_dataset, read_rows, row_range


def load_local_rows(
    path: str, ranks: RankInfo, every_rank_needs_rows: bool = True
) -> tuple[DatasetInfo, LocalRows]:
    """Open the dataset at ``path`` and read this rank's contiguous row range.

    Collective. ``every_rank_needs_rows`` (training data) makes a dataset with fewer
    rows than ranks an error; test data may leave some ranks with no rows. Raises the
    same MpigdError on every rank if any rank could not open, read or validate its part.
    """
    info = rows = error = None
    try:
        info = open_dataset(path)
        if every_rank_needs_rows:
            rows = load_rank_rows(info, ranks.rank, ranks.size)
        else:
            rows = read_rows(info, *row_range(info.n_rows, ranks.rank, ranks.size))
    except Exception as exc:  # noqa: BLE001 - reported on every rank by agree()
        error = exc
    agree(ranks.comm, error)
    return info, rows
