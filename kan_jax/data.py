"""Datasets: MNIST (IDX files or tensorflow-datasets) and pykan-style toy function data.

MNIST
-----
:func:`load_mnist` returns the official 60,000/10,000 split as NumPy arrays. It looks for the
data in this order:

1. an explicit ``data_dir`` argument (the experiments' ``--data-dir`` flag) or, when that is
   not given, the environment variable ``KAN_JAX_MNIST_DIR``: a directory holding the four
   official IDX files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
   ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (uncompressed copies
   without the ``.gz`` suffix are accepted too). A directory named this way must hold the
   data: if it does not, or a file is corrupt, :class:`DataError` is raised rather than
   silently falling back to a download;
2. tensorflow-datasets (``tfds``) ``mnist``, through its TensorFlow-free random-access path
   (``array_record`` files read with ``tfds.data_source``). If the dataset is not prepared
   yet it is prepared with :func:`prepare_tfds_mnist`, which downloads the four official
   files with tfds's download manager (plain HTTP, no TensorFlow) and verifies their
   official SHA-256 checksums;
3. otherwise :class:`DataError` with a message that says how to provide the data; the
   underlying tfds or network error is chained (``raise ... from``), not printed.

Every IDX file is parsed by :func:`read_idx`, which checks the magic number, the dimensions
and the exact payload size, and names the file and what was expected and found when any of
them is wrong. If the directory holds a ``SHA256SUMS`` file (``sha256sum`` format), the files
are checked against it first (:func:`verify_checksums`).

tensorflow-datasets without TensorFlow (measured with tfds 4.9.10, no TensorFlow installed)
--------------------------------------------------------------------------------------------
*Reading* a prepared ``mnist`` in ``array_record`` format needs no TensorFlow (images are
decoded with PIL). *Building* it with tfds's own ``mnist`` builder does need TensorFlow, even
from pre-downloaded files given as ``DownloadConfig(manual_dir=...)`` (tfds finds them there by
their registered names and checksums, so no network is used):

* extracting the ``.gz`` files goes through ``tf.io.gfile``: ``ExtractError: Error while
  extracting .../t10k-images-idx3-ubyte.gz to .../extracted/GZIP.t10k-images-idx3-ubyte.gz:
  No module named 'tensorflow'``;
* pre-extracting them into ``<download_dir>/extracted/GZIP.<name>`` gets past that, but the
  builder's generator reads them with ``tf.io.gfile.GFile`` and the ``Image`` feature encodes
  NumPy images with ``tf.image.encode_png``: ``Failed to encode example ... In <Image> with
  name "image": No module named 'tensorflow'``;
* in an environment where ``etils``' ``epath`` extra is incomplete, the official builder
  fails even earlier, while looking up its registered checksums: ``ModuleNotFoundError: No
  module named 'importlib_resources'``.

:func:`prepare_tfds_mnist` therefore uses a TensorFlow-free subclass of tfds's own MNIST
builder: same name, version (3.0.1), features and split sizes, so the result is read by the
ordinary ``tfds.data_source("mnist", data_dir=...)``; only the generator differs (it reads the
files with :func:`read_idx` and hands the images to tfds as PIL images, which tfds encodes
with PIL, losslessly). It works offline from the IDX files, or online through tfds's download
manager. Like tfds, the written splits are in tfds's deterministic shuffled order, not the
order of the IDX files; the data are the same (checked in the tests).

A download attempt without network access retries for minutes in tfds (3 min 24 s measured
here) before failing, so :func:`load_mnist` first checks in a few seconds that the download
host is reachable.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import socket
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DataError",
    "MNIST",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_URL",
    "create_dataset",
    "load_mnist",
    "prepare_tfds_mnist",
    "preprocess_mnist",
    "read_idx",
    "verify_checksums",
]

logger = logging.getLogger(__name__)

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

# IDX type byte -> (big-endian dtype, description)
_IDX_DTYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "int16"),
    0x0C: (">i4", "int32"),
    0x0D: (">f4", "float32"),
    0x0E: (">f8", "float64"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A dataset is missing, corrupt or cannot be loaded; the message says what to do."""


class MNIST(NamedTuple):
    """The MNIST split as NumPy arrays.

    Attributes
    ----------
    x_train : np.ndarray
        ``(60000, 28, 28)`` ``uint8`` images, pixel values 0..255 (0 = background).
    y_train : np.ndarray
        ``(60000,)`` ``int32`` labels 0..9.
    x_test : np.ndarray
        ``(10000, 28, 28)`` ``uint8`` images.
    y_test : np.ndarray
        ``(10000,)`` ``int32`` labels 0..9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ----------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------


def _magic_text(magic: int) -> str:
    type_byte, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    kind = _IDX_DTYPES.get(type_byte, (None, f"unknown type 0x{type_byte:02x}"))[1]
    return f"0x{magic:08x} ({kind}, {ndim}-D)"


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of an IDX file, raising DataError on any failure."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except EOFError as err:
            raise DataError(
                f"{path}: truncated gzip stream ({len(raw)} bytes on disk; the compressed data "
                f"ends before the end-of-stream marker). Download the file again."
            ) from err
        except (OSError, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip data ({err}). Download the file again.") from err
    if path.suffix == ".gz":
        raise DataError(
            f"{path}: not a gzip file: expected the gzip magic bytes 1f 8b, found "
            f"{raw[:2].hex(' ') or 'an empty file'}"
        )
    return raw


def read_idx(
    path: str | os.PathLike[str],
    *,
    expected_magic: int | None = None,
    expected_shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a NumPy array.

    The IDX format: two zero bytes, a type byte (``0x08`` unsigned byte, ``0x09`` signed byte,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), a byte with the number
    of dimensions ``d``, ``d`` big-endian ``uint32`` sizes, then the values in C order, big
    endian. Whether the file is compressed is decided from its first bytes; a name ending in
    ``.gz`` must hold gzip data.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    expected_magic : int, optional
        Required magic number (the first four bytes as a big-endian integer), e.g.
        ``0x00000803`` for MNIST images and ``0x00000801`` for MNIST labels.
    expected_shape : sequence of int or None, optional
        Required dimensions; ``None`` entries match any size.

    Returns
    -------
    np.ndarray
        A writable array in native byte order with the file's dtype (``uint8`` for MNIST) and
        dimensions.

    Raises
    ------
    DataError
        If the file is missing, not gzip although named ``.gz``, a truncated or corrupt gzip
        stream, not an IDX file, of another magic number or shape than expected, or if the
        payload is shorter or longer than the dimensions say. The message names the file
        and gives what was expected and what was found.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header: {len(data)} bytes, expected at least 4")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"{path}: not an IDX file: magic number 0x{magic:08x}; expected 0x0000TTDD with a "
            f"type byte TT in {{{', '.join(f'{t:02x}' for t in _IDX_DTYPES)}}} and a non-zero "
            f"number of dimensions DD"
        )
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number: expected {_magic_text(expected_magic)}, "
            f"found {_magic_text(magic)}"
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]][0])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need {header} header bytes, "
            f"found {len(data)} bytes in all"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None:
        exp = tuple(expected_shape)
        if len(exp) != ndim or any(e is not None and e != s for e, s in zip(exp, shape)):
            exp_text = "(" + ", ".join("*" if e is None else str(e) for e in exp) + ")"
            raise DataError(f"{path}: wrong dimensions: expected {exp_text}, found {shape}")
    payload = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != payload:
        what = "truncated payload" if found < payload else "trailing bytes after the payload"
        raise DataError(
            f"{path}: {what}: dimensions {shape} of {dtype.itemsize}-byte values need "
            f"{payload} bytes after the {header}-byte header, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, count=payload // dtype.itemsize, offset=header)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _parse_sums(sums_file: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for lineno, line in enumerate(sums_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DataError(
                f"{sums_file}:{lineno}: malformed line {line!r}; expected '<64 hex digits>  <file name>'"
            )
        sums[parts[1].strip().lstrip("*")] = digest
    return sums


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksums(
    directory: str | os.PathLike[str],
    filenames: Sequence[str] | None = None,
    *,
    sums_file: str = "SHA256SUMS",
) -> list[str]:
    """Check files against a ``sha256sum``-style list in their directory.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding the files and, optionally, the list ``sums_file``.
    filenames : sequence of str, optional
        Files to check; default: every file the list names. Files the list does not name are
        skipped.
    sums_file : str
        Name of the list (lines ``<sha256 hex>  <file name>``).

    Returns
    -------
    list of str
        The names of the files verified; empty if there is no list.

    Raises
    ------
    DataError
        If a digest differs (the message names the file and both digests), a listed file to
        check is missing, or the list is malformed.
    """
    directory = Path(directory)
    sums_path = directory / sums_file
    if not sums_path.is_file():
        return []
    sums = _parse_sums(sums_path)
    names = list(sums) if filenames is None else [n for n in filenames if n in sums]
    for name in names:
        file = directory / name
        if not file.is_file():
            raise DataError(f"{file}: listed in {sums_path} but missing")
        digest = _sha256(file)
        if digest != sums[name]:
            raise DataError(
                f"{file}: SHA-256 checksum mismatch: expected {sums[name]} (from {sums_path}), "
                f"found {digest}. The file is corrupt or not the official one; download it again."
            )
    return names


# ----------------------------------------------------------------------------------------
# MNIST from IDX files
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# MNIST through tensorflow-datasets
# ----------------------------------------------------------------------------------------


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except Exception as err:  # ImportError, or a broken installation
        raise DataError(
            f"tensorflow-datasets cannot be imported ({type(err).__name__}: {err}).\n"
            + _how_to_provide_mnist()
        ) from err
    return tfds


@functools.lru_cache(maxsize=None)
def _tf_free_mnist_builder_class(tfds: Any) -> type:
    """A subclass of tfds's MNIST builder that prepares the dataset without TensorFlow."""
    from tensorflow_datasets.image_classification import mnist as tfds_mnist
    from PIL import Image

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
                    digest = _sha256(path)
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
    and by :func:`load_mnist` with ``source="tfds"``. See the module
    docstring for why tfds's builder itself cannot do this without TensorFlow.

    Parameters
    ----------
    idx_dir : str or os.PathLike, optional
        Directory with the four official IDX files: works offline. They are checked against
        ``SHA256SUMS`` there if present, and parsed by :func:`read_idx`. If None, the files
        are downloaded from ``base_url`` with tfds's download manager (cached in
        ``download_dir``) and checked against the official SHA-256 digests.
    data_dir : str or os.PathLike, optional
        tfds data directory; default: tfds's (``TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    download_dir : str or os.PathLike, optional
        Where tfds keeps downloads; default ``<data_dir>/downloads``.
    base_url : str
        Where to download from when ``idx_dir`` is None.

    Returns
    -------
    pathlib.Path
        The prepared dataset directory (``<data_dir>/mnist/3.0.1``). If it already holds a
        prepared copy, nothing is rebuilt.

    Raises
    ------
    DataError
        If tfds cannot be imported, a file is missing or corrupt, or the download fails.
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

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory with the four official IDX files. If None, the environment variable
        ``KAN_JAX_MNIST_DIR`` is used when set. A directory given either way must hold the
        data (no fallback).
    source : {"auto", "idx", "tfds"}
        ``"idx"``: only the IDX directory (``data_dir`` or the environment variable);
        ``"tfds"``: only tensorflow-datasets; ``"auto"``: the IDX directory if one is given,
        else tensorflow-datasets.
    tfds_data_dir : str or os.PathLike, optional
        tfds data directory; default tfds's (``TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    download : bool
        Whether tfds may download and prepare ``mnist`` when it is not prepared yet.
    verify : bool
        Check the IDX files against ``SHA256SUMS`` in ``data_dir`` when that file exists.
    download_url : str
        Where to download the four files from (tfds's location by default).
    timeout : float
        Seconds allowed to reach the download host before giving up.

    Returns
    -------
    MNIST
        ``x_train (60000, 28, 28) uint8``, ``y_train (60000,) int32``,
        ``x_test (10000, 28, 28) uint8``, ``y_test (10000,) int32``. From IDX files the order is
        the files'; from tfds it is tfds's (deterministic, shuffled) order.

    Raises
    ------
    DataError
        If the data cannot be found or read; the message names the file at fault, or says how
        to provide the data, and the original error is chained.

    Examples
    --------
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

    Parameters
    ----------
    x : np.ndarray
        Images with values in 0..255, shape ``(N, 28, 28)`` (or ``(N, 784)``, or any
        ``(N, ...)``).

    Returns
    -------
    np.ndarray
        ``(N, prod(rest))`` float32 array; 0 maps to -1 and 255 to 1.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("expected a batch of images with shape (N, ...), got a scalar")
    out = (x.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    return out.reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------------------
# Toy function datasets (pykan's create_dataset)
# ----------------------------------------------------------------------------------------


def _as_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def create_dataset(
    f: Callable[[np.ndarray], Any],
    n_var: int = 2,
    ranges: Sequence[float] | Sequence[Sequence[float]] | np.ndarray = (-1, 1),
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    normalize_input: bool = False,
    normalize_label: bool = False,
) -> dict[str, np.ndarray]:
    """Sample a regression dataset ``y = f(x)`` with ``x`` uniform on a box (as pykan's).

    Parameters
    ----------
    f : callable
        Maps inputs of shape ``(N, n_var)`` (a float32 NumPy array; NumPy or ``jax.numpy``
        code both work) to labels of shape ``(N, n_out)`` or ``(N,)`` (taken as
        ``n_out = 1``), e.g. ``lambda x: jnp.exp(jnp.sin(jnp.pi * x[:, [0]]) + x[:, [1]] ** 2)``.
    n_var : int
        Number of input variables.
    ranges : pair of float, or sequence of ``n_var`` pairs
        ``(lo, hi)`` for every variable, or one pair per variable.
    train_num, test_num : int
        Number of training and test points.
    seed : int
        Seed of the NumPy generator: the same seed gives the same data. Training inputs are
        drawn before test inputs.
    normalize_input, normalize_label : bool
        Standardize inputs / labels per column with the *training* mean and standard
        deviation (applied to both sets, as pykan does); the statistics are returned too.

    Returns
    -------
    dict
        ``train_input (train_num, n_var)``, ``train_label (train_num, n_out)``,
        ``test_input (test_num, n_var)``, ``test_label (test_num, n_out)``, float32 NumPy
        arrays; plus ``input_mean``/``input_std`` (``(1, n_var)``) and/or
        ``label_mean``/``label_std`` (``(1, n_out)``) when normalizing.

    Raises
    ------
    ValueError
        For a non-positive ``n_var``/``train_num``/``test_num``, malformed or empty ranges,
        labels of the wrong shape, non-finite labels, or a constant column to normalize.
    TypeError
        If ``f`` is not callable.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    n_var = _as_positive_int(n_var, "n_var")
    train_num = _as_positive_int(train_num, "train_num")
    test_num = _as_positive_int(test_num, "test_num")
    try:
        r = np.asarray(ranges, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"ranges must be a pair (lo, hi) or {n_var} such pairs, got {ranges!r}") from err
    if r.shape == (2,):
        r = np.broadcast_to(r, (n_var, 2))
    elif r.shape != (n_var, 2):
        raise ValueError(
            f"ranges must have shape (2,) or (n_var, 2) = ({n_var}, 2), got shape {r.shape}"
        )
    if not np.all(np.isfinite(r)) or np.any(r[:, 0] >= r[:, 1]):
        raise ValueError(f"every range must be finite with lo < hi, got {r.tolist()}")

    rng = np.random.default_rng(seed)
    lo, hi = r[:, 0], r[:, 1]

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = (lo + (hi - lo) * rng.random((n, n_var))).astype(np.float32)
        y = np.asarray(f(x))
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(
                f"f must map inputs of shape ({n}, {n_var}) to labels of shape ({n}, n_out) or "
                f"({n},), got shape {y.shape}"
            )
        if y.ndim == 1:
            y = y[:, None]
        y = y.astype(np.float32)
        if not np.all(np.isfinite(y)):
            raise ValueError(
                f"f returned {int(np.sum(~np.isfinite(y)))} non-finite labels on the ranges {r.tolist()}"
            )
        return x, y

    train_input, train_label = sample(train_num)
    test_input, test_label = sample(test_num)
    out = {
        "train_input": train_input,
        "train_label": train_label,
        "test_input": test_input,
        "test_label": test_label,
    }

    def standardize(kind: str) -> None:
        train = out[f"train_{kind}"]
        mean = train.mean(axis=0, keepdims=True, dtype=np.float64)
        std = train.std(axis=0, keepdims=True, dtype=np.float64)
        if np.any(std == 0):
            raise ValueError(f"cannot normalize {kind}: column(s) {np.flatnonzero(std[0] == 0).tolist()} are constant")
        for split in ("train", "test"):
            out[f"{split}_{kind}"] = ((out[f"{split}_{kind}"] - mean) / std).astype(np.float32)
        out[f"{kind}_mean"] = mean.astype(np.float32)
        out[f"{kind}_std"] = std.astype(np.float32)

    if normalize_input:
        standardize("input")
    if normalize_label:
        standardize("label")
    return out
