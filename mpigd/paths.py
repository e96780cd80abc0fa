"""What a path given on the command line may be, checked before anything opens it.

``open()`` on a FIFO blocks until a writer appears and a character device never ends, so
an input is only opened once ``os.stat`` shows a regular file (symlinks followed). A
path that is anything else stops the command with one message saying what it is.
"""

from __future__ import annotations

import errno
import os
import stat

from mpigd.errors import DataError

#: What a dataset path may be, for messages.
DATASET = "an HDF5 file or a directory of *.h5 shards"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_input_file(
    path: str | os.PathLike, what: str, error: type[Exception] = DataError, expected: str = ""
) -> str:
    """``path`` as a str if it is a readable regular file once symlinks are followed.

    Otherwise raises ``error`` (DataError for data and models, ConfigError for config
    files): "``what`` ``path`` is a FIFO (named pipe); expected ``expected``" (default
    "a regular file"), or does not exist, is a broken symbolic link to X, a symbolic
    link loop, a directory, a device, a socket, or is not readable.
    """
    path = os.fspath(path)
    problem = _problem(path)
    if problem is not None:
        raise error(f"{what} {path} {problem}; expected {expected or 'a regular file'}")
    return path


def dataset_files(path: str | os.PathLike, what: str) -> list[str]:
    """The files of the dataset at ``path``: ``[path]`` for a file, else the sorted ``*.h5``
    entries (names not starting with '.') of the directory ``path``.

    Every entry must be a readable regular file once symlinks are followed: one that is
    not (a broken link, a directory, a FIFO) is a DataError naming it, never skipped, so
    a run cannot train on part of the data. A directory with subdirectories ``train``
    and ``test`` is what ``data synth`` and ``data digits`` write, not a dataset: the
    error names its splits. ``what`` names the path in messages.
    """
    path = os.fspath(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        is_dir = False  # check_input_file says why
    if not is_dir:
        return [check_input_file(path, what, expected=DATASET)]
    if all(os.path.isdir(os.path.join(path, split)) for split in ("train", "test")):
        train, test = (os.path.join(path, split) for split in ("train", "test"))
        raise DataError(
            f"{what} {path} holds the splits train/ and test/ (the output of 'mpigd data "
            f"synth' or 'data digits'), not a dataset; use {train} for --data and {test} "
            "for --test-data"
        )
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".h5") and not n.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list dataset directory {path}: {exc.strerror}") from exc
    if not names:
        raise DataError(f"dataset directory {path} contains no *.h5 shard files")
    expected = f"an HDF5 file, as every *.h5 entry of dataset directory {path} is a shard"
    return [check_input_file(os.path.join(path, n), "shard", expected=expected) for n in names]


def _problem(path: str) -> str | None:
    """What is wrong with ``path`` as an input file ("is a directory", ...), None if nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return _stat_failure(path, exc)
    if stat.S_ISREG(mode):
        return None if os.access(path, os.R_OK) else "is not readable (permission denied)"
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    if os.path.islink(path):
        return f"is a symbolic link to {os.readlink(path)}, which is {kind}"
    return f"is {kind}"


def _stat_failure(path: str, exc: OSError) -> str:
    """Why ``os.stat(path)`` failed, in words."""
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return f"is a broken symbolic link to {os.readlink(path)}"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    if exc.errno == errno.ENOTDIR:
        return "does not exist (part of it is not a directory)"
    if exc.errno == errno.EACCES:
        return "cannot be examined (permission denied)"
    return f"cannot be examined ({exc.strerror})"
