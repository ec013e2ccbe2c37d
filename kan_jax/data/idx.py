"""The IDX file format (MNIST's) and ``sha256sum``-style checksum lists.

:func:`read_idx` checks the magic number, the dimensions and the exact payload size and names
the file and what was expected and found when any of them is wrong; :func:`verify_checksums`
checks files against a ``SHA256SUMS`` list. Every loader of this package raises
:class:`DataError`.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["DataError", "read_idx", "verify_checksums", "sha256"]

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

    Args:
        path: The file.
        expected_magic: Required magic number (the first four bytes as a big-endian integer),
            e.g. ``0x00000803`` for MNIST images and ``0x00000801`` for MNIST labels.
        expected_shape: Required dimensions; ``None`` entries match any size.

    Returns:
        A writable array in native byte order with the file's dtype (``uint8`` for MNIST) and
        dimensions.

    Raises:
        DataError: if the file is missing, not gzip although named ``.gz``, a truncated or
            corrupt gzip stream, not an IDX file, of another magic number or shape than
            expected, or if the payload is shorter or longer than the dimensions say. The
            message names the file and gives what was expected and what was found.
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


def sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
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

    Args:
        directory: Directory holding the files and, optionally, the list ``sums_file``.
        filenames: Files to check; default: every file the list names. Files the list does not
            name are skipped.
        sums_file: Name of the list (lines ``<sha256 hex>  <file name>``).

    Returns:
        The names of the files verified; empty if there is no list.

    Raises:
        DataError: if a digest differs (the message names the file and both digests), a listed
            file to check is missing, or the list is malformed.
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
        digest = sha256(file)
        if digest != sums[name]:
            raise DataError(
                f"{file}: SHA-256 checksum mismatch: expected {sums[name]} (from {sums_path}), "
                f"found {digest}. The file is corrupt or not the official one; download it again."
            )
    return names
