"""Import of MNIST-style IDX files: parsing, gzip, scaling, label mapping and errors."""

import gzip
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import REPO

from mpigd.data import import_file, open_dataset, read_idx, read_idx_pair, read_rows
from mpigd.errors import DataError

TYPE_BYTES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array, type_byte=None) -> bytes:
    """An IDX file's bytes: magic number, big-endian sizes, big-endian data."""
    array = np.asarray(array)
    code = array.dtype.str[1:]
    type_byte = TYPE_BYTES[code] if type_byte is None else type_byte
    sizes = np.array(array.shape, dtype=">u4").tobytes()
    return bytes([0, 0, type_byte, array.ndim]) + sizes + array.astype(">" + code).tobytes()


def write_idx(path, array, gz=False, type_byte=None):
    raw = idx_bytes(array, type_byte)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def mnist_like(n=6, seed=0):
    """uint8 images (n, 3, 4) covering 0 and 255, and labels 0..3."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 4), dtype=np.uint8)
    images[0, 0, 0], images[1, 2, 3] = 0, 255
    return images, np.arange(n, dtype=np.uint8) % 4


def read_all(path):
    info = open_dataset(path)
    return info, read_rows(info, 0, info.n_rows)


@pytest.mark.parametrize("code", sorted(TYPE_BYTES))
def test_read_idx_every_type_round_trips(tmp_path, code):
    step = 5 if code in ("u1", "i1") else -1001.5  # multi-byte values catch a byte-order slip
    array = (np.arange(24).reshape(2, 3, 4) * step).astype(code)
    got = read_idx(write_idx(tmp_path / "a.idx", array))
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)


def test_uint8_images_gzipped_are_flattened_and_scaled(tmp_path):
    images, labels = mnist_like()
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    summary = import_file(
        tmp_path / "train-images-idx3-ubyte.gz",
        "idx",
        tmp_path / "train",
        shards=2,
        dtype="float32",
        labels=tmp_path / "train-labels-idx1-ubyte",
    )
    assert (summary["task"], summary["n_classes"], summary["pixel_scale"]) == ("multiclass", 4, 255)
    assert (summary["rows"], summary["features"]) == (6, 12)
    info, rows = read_all(tmp_path / "train")
    assert info.dtype == np.float32 and info.rows_per_file == (3, 3)
    np.testing.assert_allclose(rows.X, images.reshape(6, 12) / 255.0, rtol=1e-7)
    assert rows.X.min() == 0 and rows.X.max() == 1
    np.testing.assert_array_equal(rows.y, labels)
    with h5py.File(info.files[0], "r") as f:
        assert f.attrs["source_format"] == "idx" and f.attrs["pixel_scale"] == 255
        assert f.attrs["source_labels"].endswith("train-labels-idx1-ubyte")


def test_float32_images_keep_values_unless_scaled(tmp_path):
    images = np.linspace(-1, 3, 2 * 2 * 5, dtype=np.float32).reshape(5, 2, 2)
    write_idx(tmp_path / "img.idx", images)
    write_idx(tmp_path / "lab.idx", np.array([0, 2, 1, 2, 0], dtype=np.int32))
    kept = import_file(tmp_path / "img.idx", "idx", tmp_path / "k.h5", labels=tmp_path / "lab.idx")
    assert kept["pixel_scale"] == 1 and kept["n_classes"] == 3
    np.testing.assert_array_equal(read_all(tmp_path / "k.h5")[1].X, images.reshape(5, 4))
    halved = import_file(
        tmp_path / "img.idx", "idx", tmp_path / "h.h5", labels=tmp_path / "lab.idx", scale=2
    )
    assert halved["pixel_scale"] == 2
    np.testing.assert_array_equal(read_all(tmp_path / "h.h5")[1].X, images.reshape(5, 4) / 2)


def test_test_set_maps_like_the_training_set(tmp_path):
    images, labels = mnist_like()
    write_idx(tmp_path / "tr-img", images)
    write_idx(tmp_path / "tr-lab", labels)
    write_idx(tmp_path / "te-img", images[:2])
    write_idx(tmp_path / "te-lab", labels[:2])  # classes 0 and 1 only
    train = tmp_path / "tr.h5"
    import_file(tmp_path / "tr-img", "idx", train, labels=tmp_path / "tr-lab")
    test = import_file(
        tmp_path / "te-img", "idx", tmp_path / "te.h5", labels=tmp_path / "te-lab", like=train
    )
    assert (test["task"], test["n_classes"]) == ("multiclass", 4)
    ten = import_file(
        tmp_path / "te-img", "idx", tmp_path / "c.h5", labels=tmp_path / "te-lab", n_classes=10
    )
    assert ten["n_classes"] == 10


def corrupt(raw: bytes, case: str) -> bytes:
    """Damage a valid IDX file's bytes in one of several ways."""
    if case == "magic":
        return b"\x01" + raw[1:]
    if case == "type":
        return raw[:2] + b"\x0a" + raw[3:]
    if case == "header":
        return raw[:9]
    if case == "data":
        return raw[:-1]
    return raw + b"\x00"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("magic", "not an IDX file: bad magic number 01000803"),
        ("type", "unsupported IDX type byte 0x0A"),
        ("header", "truncated: its 3 dimension sizes need 16 bytes"),
        ("data", r"truncated: shape \(6, 3, 4\) of uint8 needs 72 data bytes, the file holds 71"),
        ("trailing", "has trailing bytes"),
    ],
)
def test_damaged_image_file_is_a_clear_error(tmp_path, case, message):
    images, labels = mnist_like()
    (tmp_path / "img").write_bytes(corrupt(idx_bytes(images), case))
    write_idx(tmp_path / "lab", labels)
    with pytest.raises(DataError, match=message):
        import_file(tmp_path / "img", "idx", tmp_path / "o.h5", labels=tmp_path / "lab")
    assert not (tmp_path / "o.h5").exists()


def test_idx_input_errors(tmp_path):
    images, labels = mnist_like()
    img = write_idx(tmp_path / "img", images)
    lab = write_idx(tmp_path / "lab", labels)
    out = tmp_path / "o.h5"
    with pytest.raises(DataError, match=r"needs the IDX label file \(--labels LABELS\)"):
        import_file(img, "idx", out)
    with pytest.raises(DataError, match="apply to format 'idx' only"):
        import_file(img, "csv", out, labels=lab)
    write_idx(tmp_path / "short", labels[:5])
    with pytest.raises(DataError, match="has 6 images but .*short has 5 labels"):
        import_file(img, "idx", out, labels=tmp_path / "short")
    with pytest.raises(DataError, match=r"shape \(6, 3, 4\); IDX labels are 1-D"):
        import_file(img, "idx", out, labels=img)
    with pytest.raises(DataError, match=r"shape \(6,\); IDX images need 2 or more"):
        import_file(lab, "idx", out, labels=lab)
    write_idx(tmp_path / "none-img", images[:0])
    write_idx(tmp_path / "none-lab", labels[:0])
    with pytest.raises(DataError, match="none-img contains no data rows"):
        import_file(tmp_path / "none-img", "idx", out, labels=tmp_path / "none-lab")
    with pytest.raises(DataError, match="pixel scale must be a positive number, got 0"):
        read_idx_pair(img, lab, scale=0)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(idx_bytes(images))[:-12])
    with pytest.raises(DataError, match="damaged or truncated gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="IDX label file .*missing does not exist"):
        import_file(img, "idx", out, labels=tmp_path / "missing")
    assert not out.exists()


def mpigd_data(*args):
    command = [sys.executable, "-m", "mpigd", "data", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)


def test_cli_import_idx_train_and_test(tmp_path):
    images, labels = mnist_like(n=8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:3])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:3])
    result = mpigd_data(
        "import", tmp_path / "train-images-idx3-ubyte.gz", "--format", "idx",
        "--labels", tmp_path / "train-labels-idx1-ubyte.gz", "--shards", "2",
        "--dtype", "float32", "--out", tmp_path / "train",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train = json.loads(result.stdout)
    assert (train["rows"], train["features"], train["n_classes"]) == (8, 12, 4)
    result = mpigd_data(
        "import", tmp_path / "t10k-images-idx3-ubyte", "--format", "idx",
        "--labels", tmp_path / "t10k-labels-idx1-ubyte", "--like", tmp_path / "train",
        "--scale", "auto", "--out", tmp_path / "test.h5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_classes"] == 4
    _, rows = read_all(tmp_path / "test.h5")
    np.testing.assert_array_equal(rows.X, images[:3].reshape(3, 12) / 255.0)

    missing = mpigd_data(
        "import", tmp_path / "t10k-images-idx3-ubyte", "--format", "idx", "--out", tmp_path / "m"
    )
    assert missing.returncode == 2
    assert "needs the IDX label file (--labels LABELS)" in missing.stderr
    assert "Traceback" not in missing.stderr
