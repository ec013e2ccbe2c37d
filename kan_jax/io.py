"""Atomic file writes: every file the library and the experiments produce goes through here.

A file is written to a temporary file in its destination folder, flushed to disk, given
ordinary permissions and renamed over the destination with :func:`os.replace`. A crash or a
``SIGKILL`` therefore leaves either the complete new file or the old one under the final name,
never a half-written file; a rerun that finds a file can trust it.

=============================  ==========================================================
:func:`atomic_write`           bytes, text, or a ``write(tmp_path)`` callback
:func:`write_json`             a JSON document (indented, trailing newline)
:func:`save_figure`            a matplotlib figure (format from the suffix)
=============================  ==========================================================

Checkpoints (:mod:`kan_jax.training.checkpoint`) and figures (:mod:`kan_jax.curvature.plots`) use these.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ["atomic_write", "write_json", "save_figure"]


def atomic_write(path: str | os.PathLike, data: Union[bytes, str, Callable[[Path], Any]]) -> Path:
    """Write a file atomically: all of it under its final name, or nothing (the old file kept).

    The content goes to a temporary file in the destination folder (same suffix, so writers
    that pick a format from it work), is flushed to disk, gets ordinary permissions
    (``0o666`` less the umask) and is renamed over ``path`` with :func:`os.replace`.

    Args:
      path: Destination; parent folders are created.
      data: The content (``str`` is written as UTF-8), or ``write(tmp_path)`` that writes the
        temporary file itself (e.g. ``lambda p: fig.savefig(p)``).

    Returns:
      ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    tmp_path = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600
        if callable(data):
            os.close(fd)
            data(tmp_path)
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``json.dumps(obj, indent=indent)`` + newline).

    Args:
      path: Destination; parent folders are created.
      obj: Anything :func:`json.dumps` accepts (NaN is written as ``NaN``, as :mod:`json` does).
      indent: Indentation of the document.

    Returns:
      ``path``.
    """
    return atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically; the format comes from the suffix.

    Args:
      fig: The matplotlib figure.
      path: ``.png``, ``.pdf``, ``.svg``...; parent folders are created.
      **savefig_kwargs: Passed to ``fig.savefig`` (e.g. ``dpi=150``).

    Returns:
      ``path``.
    """
    fmt = Path(path).suffix.lstrip(".") or None
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs))
