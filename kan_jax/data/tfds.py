"""MNIST through tensorflow-datasets, without TensorFlow (optional: needs ``tensorflow-datasets``).

:func:`prepare_tfds_mnist` builds tfds's ``mnist`` (``array_record`` format) from the IDX files,
offline, or downloads them with tfds's download manager; :func:`kan_jax.data.load_mnist` reads
it back with tfds's TensorFlow-free data sources. tfds is imported only when one of these runs.
Why a builder subclass is needed: ``docs/data.md``.
"""
from __future__ import annotations

import functools
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from kan_jax._optional import require
from kan_jax.data.idx import DataError, sha256, verify_checksums
from kan_jax.data.mnist import (
    _MNIST_COUNTS,
    MNIST,
    MNIST_FILES,
    MNIST_SHA256,
    MNIST_URL,
    _how_to_provide_mnist,
    _mnist_file,
    _read_mnist_split,
)

__all__ = ["prepare_tfds_mnist"]

def _import_tfds() -> Any:
    try:
        tfds = require("tensorflow_datasets", "data")
    except Exception as err:  # ImportError (naming the pip line), or a broken installation
        raise DataError(
            f"tensorflow-datasets cannot be imported ({type(err).__name__}: {err}).\n"
            + _how_to_provide_mnist()
        ) from err
    return tfds


@functools.lru_cache(maxsize=None)
def _tf_free_mnist_builder_class(tfds: Any) -> type:
    """A subclass of tfds's MNIST builder that prepares the dataset without TensorFlow."""
    from tensorflow_datasets.image_classification import mnist as tfds_mnist
    Image = require("PIL.Image", "data")

    class _MnistWithoutTF(tfds_mnist.MNIST, skip_registration=True):
        # Same name, version and DatasetInfo as the official builder: the prepared directory
        # is `<data_dir>/mnist/3.0.1`, read by the registered builder.
        name = "mnist"
        # No checksum file lookup (it needs importlib_resources); checked here instead.
        code_path = None

        def __init__(self, *, idx_dir: Path | None = None, base_url: str = MNIST_URL, **kwargs: Any):
            self._idx_dir = idx_dir
            self._base_url = base_url
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager: Any) -> list:
            if self._idx_dir is not None:
                paths = {}
                for role, name in MNIST_FILES.items():
                    path = _mnist_file(self._idx_dir, name)
                    if path is None:
                        raise DataError(f"{self._idx_dir}: lacks {name}\n" + _how_to_provide_mnist())
                    paths[role] = path
                verify_checksums(self._idx_dir, [p.name for p in paths.values()])
            else:
                urls = {role: urllib.parse.urljoin(self._base_url, name) for role, name in MNIST_FILES.items()}
                paths = {role: Path(p) for role, p in dl_manager.download(urls).items()}
                for role, path in paths.items():
                    name = MNIST_FILES[role]
                    digest = sha256(path)
                    if digest != MNIST_SHA256[name]:
                        raise DataError(
                            f"{path} (downloaded from {urls[role]}): SHA-256 checksum mismatch: "
                            f"expected {MNIST_SHA256[name]}, found {digest}"
                        )
            return [
                tfds.core.SplitGenerator(
                    name=split,
                    gen_kwargs=dict(images=paths[f"{split}_images"], labels=paths[f"{split}_labels"], split=split),
                )
                for split in ("train", "test")
            ]

        def _generate_examples(self, images: Path, labels: Path, split: str):  # type: ignore[override]
            x, y = _read_mnist_split(images, labels, split)
            for index in range(x.shape[0]):
                # A PIL image is encoded by tfds with PIL (a NumPy image would need TensorFlow).
                yield index, {"image": Image.fromarray(x[index], mode="L"), "label": int(y[index])}

    return _MnistWithoutTF


def prepare_tfds_mnist(
    idx_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download_dir: str | os.PathLike[str] | None = None,
    base_url: str = MNIST_URL,
) -> Path:
    """Prepare tensorflow-datasets' ``mnist`` (``array_record`` format) without TensorFlow.

    The result has what tfds's own builder writes: the same name ``mnist``, version 3.0.1,
    features and splits, and the same example keys (the index in the file, from which tfds
    derives the stored order). It is read by ``tfds.data_source("mnist", data_dir=data_dir)``
    and by :func:`load_mnist` with ``source="tfds"``. See ``docs/data.md`` for why tfds's
    builder itself cannot do this without TensorFlow.

    Args:
        idx_dir: Directory with the four official IDX files: works offline. They are checked
            against ``SHA256SUMS`` there if present, and parsed by :func:`read_idx`. If None,
            the files are downloaded from ``base_url`` with tfds's download manager (cached in
            ``download_dir``) and checked against the official SHA-256 digests.
        data_dir: tfds data directory; default: tfds's (``TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        download_dir: Where tfds keeps downloads; default ``<data_dir>/downloads``.
        base_url: Where to download from when ``idx_dir`` is None.

    Returns:
        The prepared dataset directory (``<data_dir>/mnist/3.0.1``). If it already holds a
        prepared copy, nothing is rebuilt.

    Raises:
        DataError: if tfds cannot be imported, a file is missing or corrupt, or the download
            fails.
    """
    tfds = _import_tfds()
    cls = _tf_free_mnist_builder_class(tfds)
    builder = cls(
        idx_dir=None if idx_dir is None else Path(idx_dir),
        base_url=base_url,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        file_format="array_record",
    )
    if not builder.is_prepared():
        try:
            builder.download_and_prepare(download_dir=None if download_dir is None else os.fspath(download_dir))
        except DataError:
            raise
        except Exception as err:
            raise DataError(
                f"preparing tfds 'mnist' in {builder.data_dir} failed ({type(err).__name__}: {err})"
            ) from err
    return Path(builder.data_dir)


def _check_reachable(url: str, timeout: float) -> None:
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as err:
        raise DataError(
            f"MNIST is not in tensorflow-datasets' data directory and {parsed.hostname}:{port} "
            f"cannot be reached to download it ({err}).\n" + _how_to_provide_mnist()
        ) from err


def _load_mnist_tfds(data_dir: Path | None, *, download: bool, base_url: str, timeout: float) -> MNIST:
    tfds = _import_tfds()
    where = os.fspath(data_dir) if data_dir is not None else None
    try:
        builder = tfds.builder("mnist", data_dir=where, file_format="array_record")
        prepared = builder.is_prepared()
    except Exception as err:
        raise DataError(
            f"tensorflow-datasets could not open 'mnist' ({type(err).__name__}: {err}).\n"
            + _how_to_provide_mnist()
        ) from err
    if not prepared:
        if not download:
            raise DataError(
                f"tensorflow-datasets' 'mnist' is not prepared in {builder.data_dir} and "
                f"download=False.\n" + _how_to_provide_mnist()
            )
        _check_reachable(base_url, timeout)
        prepare_tfds_mnist(None, data_dir, base_url=base_url)
        builder = tfds.builder("mnist", data_dir=where, file_format="array_record")
    arrays = []
    for split in ("train", "test"):
        try:
            source = builder.as_data_source(split=split)
            examples = source.__getitems__(list(range(len(source))))
        except Exception as err:
            raise DataError(
                f"reading tfds 'mnist' split {split!r} from {builder.data_dir} failed "
                f"({type(err).__name__}: {err}). A copy prepared in tfrecord format cannot be read "
                f"without TensorFlow: remove it or choose another tfds data directory.\n"
                + _how_to_provide_mnist()
            ) from err
        x = np.stack([np.asarray(e["image"], dtype=np.uint8).reshape(28, 28) for e in examples])
        y = np.asarray([e["label"] for e in examples], dtype=np.int32)
        if x.shape[0] != _MNIST_COUNTS[split]:
            raise DataError(
                f"tfds 'mnist' split {split!r} in {builder.data_dir}: expected "
                f"{_MNIST_COUNTS[split]} examples, found {x.shape[0]}"
            )
        arrays += [x, y]
    return MNIST(*arrays)
