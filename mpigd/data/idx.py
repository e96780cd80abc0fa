"""Read MNIST-style IDX files: an image file and a label file, optionally gzip-compressed.

An IDX file is a 4-byte magic number (two zero bytes, a type byte, the number of
dimensions ``k``), ``k`` big-endian uint32 sizes, then the data, big-endian, in C order.
MNIST ships images (``train-images-idx3-ubyte``, shape ``(n, 28, 28)``, uint8) and labels
(``train-labels-idx1-ubyte``, shape ``(n,)``, uint8) as two such files, often ``.gz``;
gzip is recognised by its magic bytes, whatever the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from mpigd.errors import DataError
from mpigd.paths import check_input_file

#: IDX type byte -> big-endian numpy dtype of the data.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike, what: str = "IDX file") -> np.ndarray:
    """The array stored in one IDX file (decompressed first if it is gzip).

    Parameters
    ----------
    path : the IDX file, plain or gzip-compressed.
    what : names the file in messages.

    Returns
    -------
    numpy.ndarray : shape as the header gives it, the header's big-endian dtype.

    Raises
    ------
    DataError
        If the file is not a readable regular file, is bad gzip, has a bad magic number
        or an unsupported type byte, or holds fewer or more data bytes than its header
        announces.
    """
    path = check_input_file(path, what, expected="an IDX file, plain or gzip")
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty file)'}; "
            "an IDX file starts with two zero bytes, a type byte and a dimension count"
        )
    type_byte, ndim = raw[2], raw[3]
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02X} ({d.name})" for t, d in IDX_TYPES.items())
        raise DataError(f"{path} has unsupported IDX type byte 0x{type_byte:02X}; known: {known}")
    if ndim == 0:
        raise DataError(f"{path} declares 0 dimensions; an IDX file needs at least one")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its {ndim} dimension sizes need {header} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_byte]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        problem = "is truncated" if len(raw) - header < expected else "has trailing bytes"
        raise DataError(
            f"{path} {problem}: shape {shape} of {dtype.name} needs {expected} data bytes, "
            f"the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx_pair(
    images: str | os.PathLike, labels: str | os.PathLike, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Features and labels from an image IDX file and a label IDX file.

    Parameters
    ----------
    images : IDX file of ``n`` samples, shape ``(n, ...)``; each sample is flattened, so
        ``(n, h, w)`` images become rows of ``h*w`` features.
    labels : IDX file of shape ``(n,)``, one label per sample.
    scale : pixel values are divided by it. ``None`` picks 255 for uint8 images (pixels
        then lie in [0, 1]) and 1 (values kept) for every other type.

    Returns
    -------
    (X, y, scale) : ``X`` float64 of shape ``(n, d)``, ``y`` float64 of shape ``(n,)``,
    and the scale used.

    Raises
    ------
    DataError
        If either file is not valid IDX (see :func:`read_idx`), the shapes do not fit, the
        counts differ or ``scale`` is not a positive number.
    """
    pixels = read_idx(images, "IDX image file")
    targets = read_idx(labels, "IDX label file")
    if pixels.ndim < 2:
        raise DataError(
            f"{os.fspath(images)} has shape {pixels.shape}; IDX images need 2 or more "
            "dimensions (samples first)"
        )
    if targets.ndim != 1:
        raise DataError(f"{os.fspath(labels)} has shape {targets.shape}; IDX labels are 1-D")
    if pixels.shape[0] != targets.shape[0]:
        raise DataError(
            f"{os.fspath(images)} has {pixels.shape[0]} images but {os.fspath(labels)} has "
            f"{targets.shape[0]} labels"
        )
    if scale is None:
        scale = 255.0 if pixels.dtype == np.uint8 else 1.0
    if not (np.isfinite(scale) and scale > 0):
        raise DataError(f"the pixel scale must be a positive number, got {scale}")
    X = pixels.reshape(pixels.shape[0], math.prod(pixels.shape[1:])).astype(np.float64)
    X /= scale
    return X, targets.astype(np.float64), float(scale)


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic number."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is a damaged or truncated gzip file: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
