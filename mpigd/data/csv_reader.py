"""Read a numeric CSV (or blank-separated) table into features and labels.

The delimiter is ``,`` when the first data line has a comma, else blanks; ``#`` starts a
comment; a UTF-8 byte order mark is ignored. A header line is detected (text fields only)
unless the caller says whether there is one. A file that does not parse is reported with
its first bad line: a missing value, a non-number or a change in the number of columns.
"""

from __future__ import annotations

import warnings

import numpy as np

from mpigd.errors import DataError
from mpigd.paths import check_input_file


def read_csv(path: str, label_column: int, header: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (float64, shape (N, d)) and ``y`` (float64, shape (N,)) of a CSV file.

    Parameters
    ----------
    path : the CSV file.
    label_column : column holding the label (negative counts from the end).
    header : ``True`` if the first line is a header, ``False`` if it is data, ``None``
        to detect it (a header has text fields only, a data row numbers only).

    Raises
    ------
    DataError
        If the file is not a readable regular file, is empty, not UTF-8, or not a
        rectangular table of numbers.
    """
    check_input_file(path, "CSV file")
    first_line, fields, delimiter = _first_line(path)
    if header is None:
        header = _is_header(path, first_line, fields)
    skip = first_line if header else 0  # physical lines, blank and comment lines included
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(
                path, delimiter=delimiter, skiprows=skip, ndmin=2, encoding="utf-8-sig"
            )
    except ValueError as exc:
        problem = _csv_problem(path, delimiter, skip, exc)
        raise DataError(f"cannot parse {path} as CSV: {problem}") from exc
    if table.size == 0:
        raise DataError(f"{path} contains no data rows")
    n_columns = table.shape[1]
    if n_columns < 2:
        raise DataError(f"CSV file {path} needs a label column and at least one feature column")
    if not -n_columns <= label_column < n_columns:
        raise DataError(
            f"label column {label_column} is out of range for the {n_columns} columns of {path}"
        )
    return np.delete(table, label_column, axis=1), table[:, label_column]


def _csv_lines(path: str, skip: int = 0):
    """Yield ``(line number from 1, text)`` of non-blank lines after ``skip``, comments cut."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                text = line.split("#", 1)[0].strip()
                if number > skip and text:
                    yield number, text
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot parse {path} as CSV: it is not UTF-8 text ({exc})") from exc


def _first_line(path: str) -> tuple[int, list[str], str | None]:
    """Number and fields of the first non-blank line, and the delimiter (``,`` or blanks)."""
    for number, text in _csv_lines(path):
        delimiter = "," if "," in text else None
        return number, _split(text, delimiter), delimiter
    raise DataError(f"{path} contains no data rows")


def _split(text: str, delimiter: str | None) -> list[str]:
    return [field.strip() for field in text.split(delimiter)]


def _is_header(path: str, number: int, fields: list[str]) -> bool:
    """A header has text fields (besides empty ones), a data row numbers; mixed is an error."""
    filled = [field for field in fields if field]
    text = [field for field in filled if not _is_number(field)]
    if not text:
        return False
    if len(text) < len(filled):
        raise DataError(
            f"line {number} of {path} mixes numbers and text ({', '.join(fields[:6])}); "
            "say whether it is a header (--header) or data (--no-header)"
        )
    return True


def _csv_problem(path: str, delimiter: str | None, skip: int, exc: ValueError) -> str:
    """The first bad data line: a missing value, a non-number or a column count change."""
    columns = None
    for number, text in _csv_lines(path, skip):
        fields = _split(text, delimiter)
        columns = columns or (number, len(fields))
        for k, field in enumerate(fields, start=1):
            if not field:
                return f"line {number}: missing value in column {k}"
            if not _is_number(field):
                return f"line {number}: column {k} is {field!r}, not a number"
        if len(fields) != columns[1]:
            return f"line {number} has {len(fields)} columns but line {columns[0]} {columns[1]}"
    return str(exc)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True
