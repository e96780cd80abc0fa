"""Read a CSV (or blank-separated) table into numeric features and a label column.

The delimiter is ``,`` when the first data line has a comma, else blanks; ``#`` starts a
comment; a UTF-8 byte order mark is ignored. A header line is detected unless the caller
says whether there is one: a line of text fields only is a header, a line of numbers
(text allowed in the label column alone: text labels) is data.

The label column is given by index or, with a header, by name; by default it is the
header's column named ``label`` (any case), else column 0. Columns are numbered from 0
in options and messages alike (``-1`` is the last), lines from 1 as an editor shows
them. Features must be numbers; labels are numbers or text (class names), never a mix.
A file that does not parse is reported with its first bad line: a missing value, a
non-number or a change in the number of columns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mpigd.errors import DataError
from mpigd.paths import check_input_file

#: The header name that marks the label column when none is given.
LABEL_NAME = "label"


@dataclass(frozen=True)
class CsvTable:
    """A parsed CSV file.

    Attributes
    ----------
    X : float64, shape (N, d): every column but the label's, in file order.
    y : shape (N,): float64 labels, or str labels (class names) when the column is text.
    label_column : index of the label column, from 0.
    label_name : its header name; None without a header.
    label_reason : why this column is the label, in words (for the import summary).
    """

    X: np.ndarray
    y: np.ndarray
    label_column: int
    label_name: str | None
    label_reason: str


def read_csv(
    path: str, label_column: int | str | None = None, header: bool | None = None
) -> CsvTable:
    """Read the CSV file ``path``.

    Parameters
    ----------
    path : the CSV file.
    label_column : the label column: an index from 0 (negative counts from the end), a
        header name, or None for the header's column named ``label`` (else column 0).
    header : ``True`` if the first line is a header, ``False`` if it is data, ``None``
        to detect it (see the module docstring).

    Raises
    ------
    DataError
        If the file is not a readable regular file, is empty, not UTF-8, not a
        rectangular table of numbers (but for text labels), or has no such label column.
    """
    check_input_file(path, "CSV file")
    first_line, fields, delimiter = _first_line(path)
    if header is None:
        header = _is_header(path, first_line, fields, label_column)
    names = fields if header else None
    column, name, reason = _label_column(path, label_column, names, len(fields))
    skip = first_line if header else 0  # physical lines, blank and comment lines included
    if len(fields) < 2:
        raise DataError(f"CSV file {path} needs a label column and at least one feature column")
    try:
        table = _loadtxt(path, delimiter, skip, np.float64)
    except ValueError as exc:
        problem = _csv_problem(path, delimiter, skip, column)
        if problem is not None:
            raise DataError(f"cannot parse {path} as CSV: {problem}") from exc
        X, y = _read_text_labels(path, delimiter, skip, column)  # the labels are text
    else:
        if table.size == 0:
            raise DataError(f"{path} contains no data rows")
        X, y = np.delete(table, column, axis=1), table[:, column]
    return CsvTable(X, y, column, name, reason)


def _loadtxt(path: str, delimiter: str | None, skip: int, dtype) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        return np.loadtxt(
            path, dtype=dtype, delimiter=delimiter, skiprows=skip, ndmin=2, encoding="utf-8-sig"
        )


def _read_text_labels(
    path: str, delimiter: str | None, skip: int, column: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features and text labels of a table whose only non-numbers are in ``column``
    (:func:`_csv_problem` found nothing else)."""
    try:
        table = np.char.strip(_loadtxt(path, delimiter, skip, str))
        X = np.delete(table, column, axis=1).astype(np.float64)
    except ValueError as exc:
        raise DataError(f"cannot parse {path} as CSV: {exc}") from exc
    y = table[:, column]
    numeric = np.array([_is_number(label) for label in y])
    if numeric.any():
        n, t = np.argmax(numeric), np.argmin(numeric)
        header_hint = skip == 0 and numeric[1:].all()  # only the first line has text
        raise DataError(
            f"the labels in column {column} (from 0) of {path} mix text ({str(y[t])!r} at data "
            f"row {t}) and numbers ({y[n]} at data row {n}; rows from 0); labels must be "
            "all class names or all numbers"
            + ("; if the first line is a header, give --header" if header_hint else "")
        )
    return X, y


def _label_column(
    path: str, given: int | str | None, names: list[str] | None, n_columns: int
) -> tuple[int, str | None, str]:
    """``(index from 0, header name or None, why)`` of the label column."""
    if isinstance(given, str):
        if names is None:
            raise DataError(
                f"--label-column {given!r} names a header column but {path} is read "
                "without a header; give the column's index (from 0) or --header"
            )
        return _named(path, given, names), given, "given by name"
    if given is not None:
        if not -n_columns <= given < n_columns:
            raise DataError(
                f"label column {given} is out of range: {path} has {n_columns} columns, "
                f"0 to {n_columns - 1} (from 0; -1 is the last)"
            )
        column = given % n_columns
        return column, names and names[column], "given by index"
    labels = [k for k, name in enumerate(names or ()) if name.lower() == LABEL_NAME]
    if len(labels) == 1:
        return labels[0], names[labels[0]], f"the header's column named {LABEL_NAME!r}"
    if len(labels) > 1:
        raise DataError(
            f"{path} has {len(labels)} header columns named {LABEL_NAME!r} (columns "
            f"{', '.join(map(str, labels))}, from 0); choose one with --label-column"
        )
    if names is None:
        return 0, None, "default: column 0 (there is no header to name a label column)"
    return 0, names[0], f"default: column 0 (no header column is named {LABEL_NAME!r})"


def _named(path: str, name: str, names: list[str]) -> int:
    """Index of the header column ``name`` (exact, else the one matching in any case)."""
    for matches in ([k for k, n in enumerate(names) if n == name],
                    [k for k, n in enumerate(names) if n.lower() == name.lower()]):  # fmt: skip
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DataError(
                f"{path} has {len(matches)} header columns named {name!r} (columns "
                f"{', '.join(map(str, matches))}, from 0); give --label-column by index"
            )
    shown = ", ".join(f"{k} {n!r}" for k, n in enumerate(names[:20]))
    raise DataError(
        f"{path} has no header column named {name!r}; its columns (from 0) are {shown}"
        + (", ..." if len(names) > 20 else "")
    )


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


def _is_header(path: str, number: int, fields: list[str], label_column: int | str | None) -> bool:
    """Whether the first line is a header: text fields only (besides empty ones), or a
    line naming the label column given by name. A line whose only text is in the label
    column is data with a text label; any other mix is an error."""
    if isinstance(label_column, str) and label_column in fields:
        return True
    filled = [k for k, field in enumerate(fields) if field]
    text = [k for k in filled if not _is_number(fields[k])]
    if not text:
        return False
    if len(text) == len(filled):
        return True
    label = 0 if label_column is None else label_column
    if isinstance(label, int) and -len(fields) <= label < len(fields):
        if text == [label % len(fields)]:
            return False
    hint = ""
    if len(text) == 1:
        hint = (
            f"; if it is data with text labels in column {text[0]} (from 0), "
            f"give --label-column {text[0]}"
        )
    raise DataError(
        f"line {number} of {path} mixes numbers and text ({', '.join(fields[:6])}); "
        f"say whether it is a header (--header) or data (--no-header){hint}"
    )


def _csv_problem(path: str, delimiter: str | None, skip: int, label_column: int) -> str | None:
    """The first bad data line: a missing value, a non-number outside the label column or
    a column count change; None if there is none (the label column holds text)."""
    columns = None
    for number, text in _csv_lines(path, skip):
        fields = _split(text, delimiter)
        columns = columns or (number, len(fields))
        for k, field in enumerate(fields):
            if not field:
                return f"line {number}: missing value in column {k} (from 0)"
            if k != label_column and not _is_number(field):
                return f"line {number}: column {k} (from 0) is {field!r}, not a number"
        if len(fields) != columns[1]:
            return f"line {number} has {len(fields)} columns but line {columns[0]} {columns[1]}"
    return None


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True
