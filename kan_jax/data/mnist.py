"""MNIST: the official 60,000/10,000 split from the four IDX files, or through tensorflow-datasets.

:func:`load_mnist` looks, in order, at an explicit folder (``--data-dir``), the folder named by
``$KAN_JAX_MNIST_DIR``, then tensorflow-datasets (:mod:`kan_jax.data.tfds`, imported only when
needed); :func:`preprocess_mnist` applies the published scaling. The sources, their checks and
why the tfds path is built the way it is: ``docs/data.md``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kan_jax.data.idx import DataError, read_idx, verify_checksums

__all__ = ["MNIST", "MNIST_ENV_VAR", "MNIST_FILES", "MNIST_SHA256", "MNIST_URL", "load_mnist", "preprocess_mnist"]

logger = logging.getLogger("kan_jax.data")

#: Environment variable naming a directory with the four MNIST IDX files.
MNIST_ENV_VAR = "KAN_JAX_MNIST_DIR"

#: Official file names, keyed by role.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: SHA-256 of the official gzip files (the CVDF mirror tfds downloads from; the same digests
#: are registered in tfds's ``url_checksums/mnist.txt``).
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Download location used by tfds's ``mnist`` builder.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

_MNIST_COUNTS = {"train": 60_000, "test": 10_000}
_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class MNIST(NamedTuple):
    """The MNIST split as NumPy arrays.

    Attributes:
        x_train: ``(60000, 28, 28)`` ``uint8`` images, pixel values 0..255 (0 = background).
        y_train: ``(60000,)`` ``int32`` labels 0..9.
        x_test: ``(10000, 28, 28)`` ``uint8`` images.
        y_test: ``(10000,)`` ``int32`` labels 0..9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _mnist_file(directory: Path, name: str) -> Path | None:
    """The file ``name`` in ``directory``, or its uncompressed twin, or None."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_mnist_split(images: Path, labels: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    n = _MNIST_COUNTS[split]
    x = read_idx(images, expected_magic=_IMAGE_MAGIC, expected_shape=(n, 28, 28))
    y = read_idx(labels, expected_magic=_LABEL_MAGIC, expected_shape=(n,))
    if y.max() > 9:
        bad = int(np.argmax(y > 9))
        raise DataError(f"{labels}: labels must be 0..9, found {int(y[bad])} at index {bad}")
    return x, y.astype(np.int32)


def _load_mnist_idx(directory: Path, *, verify: bool) -> MNIST:
    if not directory.is_dir():
        raise DataError(
            f"MNIST directory {directory} does not exist.\n" + _how_to_provide_mnist()
        )
    paths = {role: _mnist_file(directory, name) for role, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[role] for role, p in paths.items() if p is None]
    if missing:
        raise DataError(
            f"MNIST directory {directory} lacks {', '.join(missing)}.\n" + _how_to_provide_mnist()
        )
    if verify:
        checked = verify_checksums(directory, [p.name for p in paths.values() if p is not None])
        if checked:
            logger.info("verified SHA-256 of %s against %s/SHA256SUMS", ", ".join(checked), directory)
    arrays = {}
    for split in ("train", "test"):
        arrays[split] = _read_mnist_split(paths[f"{split}_images"], paths[f"{split}_labels"], split)
    return MNIST(*arrays["train"], *arrays["test"])


def _how_to_provide_mnist() -> str:
    files = ", ".join(MNIST_FILES.values())
    return (
        "Provide MNIST in one of these ways:\n"
        f"  1. put the four official IDX files ({files}) in a directory and pass it with "
        f"--data-dir DIR (load_mnist(data_dir=DIR)) or set the environment variable "
        f"{MNIST_ENV_VAR}=DIR;\n"
        f"  2. let tensorflow-datasets fetch it: with network access, load_mnist() downloads the "
        f"same four files from {MNIST_URL} and prepares tfds's 'mnist' (no TensorFlow needed); "
        f"a copy already prepared in array_record format is found in tfds's data directory "
        f"(tfds_data_dir=..., or the TFDS_DATA_DIR environment variable, default "
        f"~/tensorflow_datasets). kan_jax.data.prepare_tfds_mnist(idx_dir, data_dir) prepares "
        f"it offline from the IDX files."
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    source: str = "auto",
    tfds_data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    verify: bool = True,
    download_url: str = MNIST_URL,
    timeout: float = 5.0,
) -> MNIST:
    """Load MNIST as NumPy arrays, from IDX files or tensorflow-datasets.

    Args:
        data_dir: Directory with the four official IDX files. If None, the environment variable
            ``KAN_JAX_MNIST_DIR`` is used when set. A directory given either way must hold the
            data (no fallback).
        source: ``"idx"``: only the IDX directory (``data_dir`` or the environment variable);
            ``"tfds"``: only tensorflow-datasets; ``"auto"``: the IDX directory if one is given,
            else tensorflow-datasets.
        tfds_data_dir: tfds data directory; default tfds's (``TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        download: Whether tfds may download and prepare ``mnist`` when it is not prepared yet.
        verify: Check the IDX files against ``SHA256SUMS`` in ``data_dir`` when that file
            exists.
        download_url: Where to download the four files from (tfds's location by default).
        timeout: Seconds allowed to reach the download host before giving up.

    Returns:
        An :class:`MNIST`: ``x_train (60000, 28, 28) uint8``, ``y_train (60000,) int32``,
        ``x_test (10000, 28, 28) uint8``, ``y_test (10000,) int32``. From IDX files the order is
        the files'; from tfds it is tfds's (deterministic, shuffled) order.

    Raises:
        DataError: if the data cannot be found or read; the message names the file at fault, or
            says how to provide the data, and the original error is chained.

    Example:
        >>> mnist = load_mnist("../shared/data/mnist")  # doctest: +SKIP
        >>> x = preprocess_mnist(mnist.x_train)  # (60000, 784) float32 in [-1, 1]  # doctest: +SKIP
    """
    if source not in ("auto", "idx", "tfds"):
        raise ValueError(f"source must be 'auto', 'idx' or 'tfds', got {source!r}")
    if data_dir is None and source != "tfds" and os.environ.get(MNIST_ENV_VAR):
        data_dir = os.environ[MNIST_ENV_VAR]
    if source == "idx" or (source == "auto" and data_dir is not None):
        if data_dir is None:
            raise DataError(
                f"source='idx' needs a directory: pass data_dir or set {MNIST_ENV_VAR}.\n"
                + _how_to_provide_mnist()
            )
        directory = Path(data_dir).expanduser()
        data = _load_mnist_idx(directory, verify=verify)
        logger.info("MNIST loaded from IDX files in %s", directory)
        return data
    from kan_jax.data.tfds import _load_mnist_tfds

    data = _load_mnist_tfds(
        None if tfds_data_dir is None else Path(tfds_data_dir).expanduser(),
        download=download,
        base_url=download_url,
        timeout=timeout,
    )
    logger.info("MNIST loaded through tensorflow-datasets")
    return data


def preprocess_mnist(x: np.ndarray) -> np.ndarray:
    """Scale MNIST images to ``[-1, 1]`` and flatten them, as the published protocol does.

    Computes ``(x / 255 - 0.5) / 0.5`` (``ToTensor`` then ``Normalize(0.5, 0.5)`` in
    torchvision terms) in float32.

    Args:
        x: Images with values in 0..255, shape ``(N, 28, 28)`` (or ``(N, 784)``, or any
            ``(N, ...)``).

    Returns:
        ``(N, prod(rest))`` float32 array; 0 maps to -1 and 255 to 1.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("expected a batch of images with shape (N, ...), got a scalar")
    out = (x.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    return out.reshape(x.shape[0], -1)
