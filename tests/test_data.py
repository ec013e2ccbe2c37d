"""Tests of kan_jax.data: IDX reader, MNIST loading (IDX files and tensorflow-datasets), toy data.

The genuine MNIST files come from the ``mnist_dir`` fixture; corrupted copies are made in
``tmp_path``. Expected facts are the official ones (counts per class, the well-known pixel
mean 0.1307 and standard deviation 0.3081 of the training set after scaling to [0, 1]).
"""
from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import sys
import threading
from functools import partial
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax.data import (
    MNIST_FILES,
    DataError,
    create_dataset,
    load_mnist,
    prepare_tfds_mnist,
    preprocess_mnist,
    read_idx,
    verify_checksums,
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir)


def _copy_mnist(src: Path, dst: Path, *, sums: bool = False) -> Path:
    """Copy the four IDX files (and optionally SHA256SUMS) into a fresh directory."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES.values():
        shutil.copyfile(src / name, dst / name)
    if sums:
        shutil.copyfile(src / "SHA256SUMS", dst / "SHA256SUMS")
    return dst


def _idx_bytes(array: np.ndarray, type_byte: int) -> bytes:
    """Encode an array as IDX the straightforward way (independent of the reader)."""
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


# --------------------------------------------------------------------------------------
# IDX reader on the genuine files
# --------------------------------------------------------------------------------------


def test_mnist_shapes_dtypes_and_range(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert mnist.y_train.shape == (60000,) and mnist.y_train.dtype == np.int32
    assert mnist.y_test.shape == (10000,) and mnist.y_test.dtype == np.int32
    for x in (mnist.x_train, mnist.x_test):
        assert x.min() == 0 and x.max() == 255
    # Border pixels are background in (almost) every digit: the corner is always 0.
    assert not mnist.x_train[:, 0, 0].any()
    # torchvision's normalization constants, computed from the training set in [0, 1].
    hist = np.bincount(mnist.x_train.ravel(), minlength=256)
    levels = np.arange(256) / 255.0
    mean = hist @ levels / hist.sum()
    std = np.sqrt(hist @ (levels - mean) ** 2 / hist.sum())
    assert abs(mean - 0.1307) < 1e-4 and abs(std - 0.3081) < 1e-4


def test_mnist_label_histogram_matches_official_counts(mnist):
    assert np.bincount(mnist.y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.y_test, minlength=10).tolist() == TEST_COUNTS
    # The files' first labels (well known: 5, 0, 4, 1, 9 and 7, 2, 1, 0, 4).
    assert mnist.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.y_test[:5].tolist() == [7, 2, 1, 0, 4]


def test_read_idx_raw_files_and_headers(mnist_dir, mnist):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", expected_magic=0x801, expected_shape=(None,))
    assert labels.dtype == np.uint8 and labels.flags.writeable
    np.testing.assert_array_equal(labels, mnist.y_test)
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(images, mnist.x_test)


def test_read_idx_plain_and_other_dtypes(tmp_path):
    rng = np.random.default_rng(7)
    cases = {
        0x08: rng.integers(0, 256, (3, 4), dtype=np.uint8),
        0x09: rng.integers(-128, 128, (5,), dtype=np.int8),
        0x0B: rng.integers(-30000, 30000, (2, 3, 4), dtype=np.int16),
        0x0C: rng.integers(-(2**31), 2**31 - 1, (6, 2), dtype=np.int32),
        0x0D: rng.standard_normal((4, 4)).astype(np.float32),
        0x0E: rng.standard_normal((3,)),
    }
    for type_byte, array in cases.items():
        raw = _idx_bytes(array, type_byte)
        (tmp_path / f"a{type_byte}.idx").write_bytes(raw)
        (tmp_path / f"a{type_byte}.idx.gz").write_bytes(gzip.compress(raw))
        for name in (f"a{type_byte}.idx", f"a{type_byte}.idx.gz"):
            out = read_idx(tmp_path / name)
            assert out.dtype == array.dtype.newbyteorder("=") and out.dtype.isnative
            np.testing.assert_array_equal(out, array)


def test_mnist_uncompressed_copies_accepted(mnist_dir, tmp_path, mnist):
    for name in MNIST_FILES.values():
        with gzip.open(mnist_dir / name) as f:
            (tmp_path / name.removesuffix(".gz")).write_bytes(f.read())
    data = load_mnist(tmp_path)
    for a, b in zip(data, mnist):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# Corrupted copies: the error names the file and the problem
# --------------------------------------------------------------------------------------


def _rewrite(path: Path, transform) -> None:
    with gzip.open(path) as f:
        raw = f.read()
    path.write_bytes(gzip.compress(transform(raw), compresslevel=1))


def test_truncated_gzip(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    bad = d / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: 5_000_000])
    with pytest.raises(DataError, match="truncated gzip stream") as err:
        load_mnist(d)
    assert str(bad) in str(err.value)


def test_corrupt_gzip_data(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    bad = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])  # the CRC32 of the gzip trailer
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt gzip data") as err:
        load_mnist(d)
    assert str(bad) in str(err.value)


def test_not_gzip_at_all(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    bad = d / "t10k-images-idx3-ubyte.gz"
    bad.write_text("<html>404 Not Found</html>")
    with pytest.raises(DataError, match=r"not a gzip file: expected the gzip magic bytes 1f 8b, found 3c 68") as err:
        load_mnist(d)
    assert str(bad) in str(err.value)
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="found an empty file"):
        read_idx(bad)


def test_wrong_magic(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    # A label file whose header claims 3-D unsigned bytes (the images' magic number).
    bad = d / "train-labels-idx1-ubyte.gz"
    _rewrite(bad, lambda raw: raw[:3] + b"\x03" + raw[4:])
    with pytest.raises(DataError) as err:
        load_mnist(d)
    msg = str(err.value)
    assert str(bad) in msg
    assert "wrong magic number: expected 0x00000801 (unsigned byte, 1-D), found 0x00000803 (unsigned byte, 3-D)" in msg
    # Not an IDX file at all.
    _rewrite(bad, lambda raw: b"\x12\x34\x56\x78" + raw[4:])
    with pytest.raises(DataError, match=r"not an IDX file: magic number 0x12345678") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_wrong_dims(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    bad = d / "train-images-idx3-ubyte.gz"
    _rewrite(bad, lambda raw: raw[:4] + (59999).to_bytes(4, "big") + raw[8:])
    with pytest.raises(DataError) as err:
        load_mnist(d)
    assert f"{bad}: wrong dimensions: expected (60000, 28, 28), found (59999, 28, 28)" in str(err.value)
    # Without expectations the same file is a payload-size mismatch (784 bytes too many).
    with pytest.raises(DataError, match=r"trailing bytes after the payload: .* need 47039216 bytes .* found 47040000"):
        read_idx(bad)


def test_short_payload(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    bad = d / "t10k-images-idx3-ubyte.gz"
    _rewrite(bad, lambda raw: raw[:-100])
    with pytest.raises(DataError) as err:
        load_mnist(d)
    assert (
        f"{bad}: truncated payload: dimensions (10000, 28, 28) of 1-byte values need 7840000 bytes "
        f"after the 16-byte header, found 7839900"
    ) in str(err.value)
    _rewrite(bad, lambda raw: raw[:10])
    with pytest.raises(DataError, match=r"truncated header: 3 dimensions need 16 header bytes, found 10"):
        read_idx(bad)


def test_label_out_of_range(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    bad = d / "t10k-labels-idx1-ubyte.gz"
    _rewrite(bad, lambda raw: raw[:8 + 17] + b"\x0c" + raw[8 + 18:])
    with pytest.raises(DataError, match=r"labels must be 0\.\.9, found 12 at index 17"):
        load_mnist(d)


# --------------------------------------------------------------------------------------
# Checksums and missing data
# --------------------------------------------------------------------------------------


def test_checksums_verified_and_mismatch_named(mnist_dir, tmp_path, mnist):
    d = _copy_mnist(mnist_dir, tmp_path / "m", sums=True)
    assert sorted(verify_checksums(d)) == sorted(MNIST_FILES.values())
    # Same data, recompressed: a valid file, but not the official bytes.
    bad = d / "train-labels-idx1-ubyte.gz"
    _rewrite(bad, lambda raw: raw)
    with pytest.raises(DataError) as err:
        load_mnist(d)
    msg = str(err.value)
    assert f"{bad}: SHA-256 checksum mismatch: expected 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c" in msg
    assert "SHA256SUMS" in msg
    # The content itself is fine: without verification it loads and equals the original.
    np.testing.assert_array_equal(load_mnist(d, verify=False).y_train, mnist.y_train)
    (d / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(DataError, match=r"SHA256SUMS:1: malformed line"):
        verify_checksums(d)


def test_missing_directory_explains_how_to_provide_data(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path / "nowhere")
    msg = str(err.value)
    assert f"{tmp_path / 'nowhere'} does not exist" in msg
    for hint in ("--data-dir", "KAN_JAX_MNIST_DIR", "tensorflow-datasets", "train-images-idx3-ubyte.gz"):
        assert hint in msg
    assert err.value.__cause__ is None  # no traceback soup


def test_missing_file_named(mnist_dir, tmp_path):
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\.gz"):
        load_mnist(d)


def test_environment_variable_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("KAN_JAX_MNIST_DIR", str(tmp_path / "from-env"))
    with pytest.raises(DataError, match="from-env does not exist"):
        load_mnist()
    with pytest.raises(ValueError, match="source must be"):
        load_mnist(source="web")


def test_tfds_not_prepared_without_download(monkeypatch, tmp_path):
    monkeypatch.delenv("KAN_JAX_MNIST_DIR", raising=False)
    with pytest.raises(DataError) as err:
        load_mnist(tfds_data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "not prepared" in msg and "download=False" in msg and "--data-dir" in msg


def test_tfds_unreachable_host_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("KAN_JAX_MNIST_DIR", raising=False)
    with socket.socket() as s:  # a local port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as err:
        load_mnist(source="tfds", tfds_data_dir=tmp_path, download_url=f"http://127.0.0.1:{port}/", timeout=2)
    assert f"127.0.0.1:{port} cannot be reached" in str(err.value)
    assert isinstance(err.value.__cause__, OSError)


def test_tfds_import_failure_is_chained(monkeypatch, tmp_path):
    monkeypatch.delenv("KAN_JAX_MNIST_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(DataError, match="tensorflow-datasets cannot be imported") as err:
        load_mnist(tfds_data_dir=tmp_path)
    assert isinstance(err.value.__cause__, ImportError)
    assert "--data-dir" in str(err.value)


# --------------------------------------------------------------------------------------
# tensorflow-datasets, prepared offline without TensorFlow
# --------------------------------------------------------------------------------------


def _sorted_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The examples as rows (pixels, label), in a canonical order: compares multisets."""
    rows = np.concatenate([x.reshape(len(x), -1), y[:, None].astype(np.uint8)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def _assert_same_examples(a, b) -> None:
    for split in ("train", "test"):
        xa, ya = getattr(a, f"x_{split}"), getattr(a, f"y_{split}")
        xb, yb = getattr(b, f"x_{split}"), getattr(b, f"y_{split}")
        assert xa.shape == xb.shape and xa.dtype == xb.dtype and ya.dtype == yb.dtype
        np.testing.assert_array_equal(_sorted_rows(xa, ya), _sorted_rows(xb, yb))


@pytest.fixture(scope="module")
def tfds_dir(mnist_dir, tmp_path_factory):
    """tfds 'mnist' prepared from the shared IDX files, offline and without TensorFlow."""
    pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare_tfds_mnist(mnist_dir, data_dir)
    return data_dir


@pytest.mark.slow
def test_tfds_prepared_offline_equals_idx(tfds_dir, mnist, monkeypatch):
    import tensorflow_datasets as tfds

    assert (tfds_dir / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert "tensorflow" not in sys.modules  # TensorFlow was neither needed nor imported
    monkeypatch.delenv("KAN_JAX_MNIST_DIR", raising=False)
    data = load_mnist(tfds_data_dir=tfds_dir, download=False)
    _assert_same_examples(data, mnist)
    assert np.bincount(data.y_train).tolist() == TRAIN_COUNTS
    # The ordinary tfds reader (the registered 'mnist' builder) reads it too.
    source = tfds.data_source("mnist", split="test", data_dir=tfds_dir, download=False)
    assert len(source) == 10000 and source[0]["image"].shape == (28, 28, 1)
    # A second call finds the prepared copy and does not rebuild.
    stamp = (tfds_dir / "mnist" / "3.0.1" / "dataset_info.json").stat().st_mtime_ns
    prepare_tfds_mnist(Path("/nonexistent"), tfds_dir)
    assert (tfds_dir / "mnist" / "3.0.1" / "dataset_info.json").stat().st_mtime_ns == stamp


def test_prepare_tfds_rejects_incomplete_idx_dir(mnist_dir, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    d = _copy_mnist(mnist_dir, tmp_path / "m")
    (d / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks train-images-idx3-ubyte.gz"):
        prepare_tfds_mnist(d, tmp_path / "tfds")


@pytest.mark.slow
def test_tfds_download_path_without_tensorflow(mnist_dir, mnist, tmp_path, monkeypatch):
    """load_mnist's download branch, served by a local HTTP server instead of the CVDF mirror."""
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("KAN_JAX_MNIST_DIR", raising=False)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(mnist_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        data = load_mnist(source="tfds", tfds_data_dir=tmp_path, download_url=url)
    finally:
        server.shutdown()
        thread.join()
    _assert_same_examples(data, mnist)


# --------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------


def test_preprocess_mnist(mnist):
    x = preprocess_mnist(mnist.x_test)
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    expected = (mnist.x_test.reshape(10000, -1).astype(np.float64) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)
    ramp = preprocess_mnist(np.arange(256, dtype=np.uint8).reshape(1, 16, 16))
    assert ramp.shape == (1, 256) and ramp[0, 0] == -1.0 and ramp[0, -1] == 1.0
    assert np.all(np.diff(ramp[0]) > 0)


# --------------------------------------------------------------------------------------
# create_dataset
# --------------------------------------------------------------------------------------


def _seed_f(x):
    """The landscape study's function exp(sin(pi x) + y^2), written with jax.numpy."""
    return jnp.exp(jnp.sin(jnp.pi * x[:, [0]]) + x[:, [1]] ** 2)


def test_create_dataset_shapes_dtypes_and_labels():
    data = create_dataset(_seed_f, n_var=2, train_num=300, test_num=200, seed=3)
    assert set(data) == {"train_input", "train_label", "test_input", "test_label"}
    assert data["train_input"].shape == (300, 2) and data["train_label"].shape == (300, 1)
    assert data["test_input"].shape == (200, 2) and data["test_label"].shape == (200, 1)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in data.values())
    for split in ("train", "test"):
        x = data[f"{split}_input"].astype(np.float64)
        expected = np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2)
        np.testing.assert_allclose(data[f"{split}_label"][:, 0], expected, rtol=2e-6)
    # Several outputs, and a 1-D output taken as one column.
    multi = create_dataset(lambda x: np.stack([x.sum(1), x.prod(1), x[:, 0]], 1), n_var=3, train_num=10, test_num=5)
    assert multi["train_label"].shape == (10, 3) and multi["test_label"].shape == (5, 3)
    np.testing.assert_array_equal(multi["train_label"][:, 2], multi["train_input"][:, 0])
    flat = create_dataset(lambda x: x[:, 0] * 2, n_var=1, train_num=10, test_num=5)
    assert flat["train_label"].shape == (10, 1)


def test_create_dataset_deterministic():
    a = create_dataset(_seed_f, seed=11, train_num=50, test_num=50)
    b = create_dataset(_seed_f, seed=11, train_num=50, test_num=50)
    c = create_dataset(_seed_f, seed=12, train_num=50, test_num=50)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["train_input"], c["train_input"])
    assert not np.array_equal(a["train_input"], a["test_input"])


def test_create_dataset_ranges():
    ranges = [(-3.0, -1.0), (0.0, 0.5), (10.0, 20.0)]
    data = create_dataset(lambda x: x.sum(1), n_var=3, ranges=ranges, train_num=4000, test_num=4000, seed=1)
    for x in (data["train_input"], data["test_input"]):
        for j, (lo, hi) in enumerate(ranges):
            assert lo <= x[:, j].min() and x[:, j].max() <= hi
            # Uniform: fills the interval (gaps at the ends far below 1% of the width), mean mid.
            assert x[:, j].min() - lo < 0.01 * (hi - lo) and hi - x[:, j].max() < 0.01 * (hi - lo)
            assert abs(x[:, j].mean() - (lo + hi) / 2) < 0.03 * (hi - lo)
    shared = create_dataset(lambda x: x.sum(1), n_var=2, ranges=(2, 4), train_num=500, test_num=10)
    assert shared["train_input"].min() >= 2 and shared["train_input"].max() <= 4


def test_create_dataset_normalization():
    raw = create_dataset(_seed_f, seed=5, train_num=500, test_num=300)
    norm = create_dataset(_seed_f, seed=5, train_num=500, test_num=300, normalize_input=True, normalize_label=True)
    for kind in ("input", "label"):
        z = norm[f"train_{kind}"].astype(np.float64)
        np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
        # The test set uses the training statistics.
        restored = norm[f"test_{kind}"] * norm[f"{kind}_std"] + norm[f"{kind}_mean"]
        np.testing.assert_allclose(restored, raw[f"test_{kind}"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_var=0), ValueError, "n_var must be a positive integer"),
        (dict(n_var=1.5), ValueError, "n_var must be a positive integer"),
        (dict(n_var=True), ValueError, "n_var must be a positive integer"),
        (dict(train_num=0), ValueError, "train_num must be a positive integer"),
        (dict(test_num=-3), ValueError, "test_num must be a positive integer"),
        (dict(ranges=(0, 1, 2)), ValueError, r"ranges must have shape \(2,\) or \(n_var, 2\) = \(2, 2\), got shape \(3,\)"),
        (dict(ranges=[(0, 1)] * 3), ValueError, r"got shape \(3, 2\)"),
        (dict(ranges=(1, 1)), ValueError, "lo < hi"),
        (dict(ranges=[(0, 1), (2, -2)]), ValueError, "lo < hi"),
        (dict(ranges=(0, np.inf)), ValueError, "finite"),
        (dict(ranges="ab"), ValueError, "ranges must be"),
        (dict(f=lambda x: x[:-1, 0]), ValueError, r"labels of shape \(1000, n_out\) or \(1000,\), got shape \(999,\)"),
        (dict(f=lambda x: np.float32(1.0)), ValueError, r"got shape \(\)"),
        (dict(f=lambda x: x[:, :, None]), ValueError, r"got shape \(1000, 2, 1\)"),
        (dict(f=lambda x: np.where(x[:, 0] > 0, 1.0, np.nan)), ValueError, "non-finite labels"),
        (dict(f=lambda x: np.ones(len(x)), normalize_label=True), ValueError, r"column\(s\) \[0\] are constant"),
        (dict(f="sin"), TypeError, "f must be callable"),
    ],
)
def test_create_dataset_bad_arguments(kwargs, error, match):
    kwargs = {"f": lambda x: x.sum(1), **kwargs}
    with pytest.raises(error, match=match):
        create_dataset(**kwargs)
