"""Files replaced atomically: a reader sees the previous complete file or the new one."""

from __future__ import annotations

import os
from pathlib import Path

#: What a failed write raises: OSError (disk full, quota, permissions), and h5py's
#: RuntimeError for some of the same failures met while it closes a file ("Can't
#: decrement id ref count ... File too large").
WRITE_ERRORS = (OSError, RuntimeError)


def replace_atomically(path: Path, write, before_rename=None) -> None:
    """Call ``write(tmp_path)``, fsync, rename over ``path``, fsync the directory.

    A crash at any moment leaves the old ``path`` or the new one, never a partial file.
    ``before_rename()``, if given, runs between the fsync and the rename (the
    checkpoint's ``before_checkpoint_rename`` hook point).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if before_rename:
            before_rename()
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)
