"""Saving and loading parameter pytrees (msgpack via :mod:`flax.serialization`).

A checkpoint file holds a small header and the parameters' Flax *state dict*
(:func:`flax.serialization.to_state_dict`: nested dicts with string keys, arrays as numpy
arrays, dtypes including bfloat16 kept), serialised with
:func:`flax.serialization.msgpack_serialize`. Files are written atomically: the bytes go to a
temporary file in the destination directory, are flushed to disk, and the temporary file is then
renamed over the destination with :func:`os.replace`, so a crash never leaves a half-written
checkpoint under the final name. Plain ``flax.serialization.to_bytes`` files are read as well.

Examples
--------
>>> save_params("runs/theta0.msgpack", params)
>>> params = load_params("runs/theta0.msgpack", target=params)   # same structure back
>>> raw = load_params("runs/theta0.msgpack")                      # nested dicts of numpy arrays
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import jax
from flax import serialization

PyTree = Any

__all__ = ["save_params", "load_params", "atomic_write", "CheckpointError"]

_FORMAT = "kan_jax.params"
_VERSION = 1


def atomic_write(path: str | os.PathLike, data: Union[bytes, str, Callable[[Path], Any]]) -> Path:
    """Write a file atomically: all of it under its final name, or nothing (the old file kept).

    The content goes to a temporary file in the destination folder (same suffix, so writers
    that pick a format from it work), is flushed to disk, gets ordinary permissions
    (``0o666`` less the umask) and is renamed over ``path`` with :func:`os.replace`.

    Parameters
    ----------
    path : str or PathLike
        Destination; parent folders are created.
    data : bytes, str or callable
        The content (``str`` is written as UTF-8), or ``write(tmp_path)`` that writes the
        temporary file itself (e.g. ``lambda p: fig.savefig(p)``).

    Returns
    -------
    Path
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


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as a parameter checkpoint."""


def save_params(path: str | os.PathLike, params: PyTree) -> Path:
    """Write a parameter pytree to ``path`` atomically (msgpack).

    Parameters
    ----------
    path : str or PathLike
        Destination file; parent directories are created.
    params : PyTree
        Any pytree Flax can turn into a state dict (dicts, lists, tuples, NamedTuples,
        ``flax.struct`` dataclasses, arrays, scalars).

    Returns
    -------
    Path
        The path written.
    """
    state = serialization.to_state_dict(jax.device_get(params))
    payload = serialization.msgpack_serialize({"format": _FORMAT, "version": _VERSION, "params": state})
    return atomic_write(path, payload)


def load_params(path: str | os.PathLike, target: PyTree | None = None) -> PyTree:
    """Read a parameter pytree written by :func:`save_params`.

    Parameters
    ----------
    path : str or PathLike
        Checkpoint file.
    target : PyTree, optional
        A pytree of the expected structure (e.g. freshly initialised params). When given, the
        result has exactly that structure (:func:`flax.serialization.from_state_dict`); without
        it the raw state dict is returned: nested dicts with string keys and numpy leaves (lists
        and tuples come back as dicts keyed ``"0"``, ``"1"``, ...).

    Returns
    -------
    PyTree

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (the message names it).
    CheckpointError
        (a ``ValueError``) if the file is not a readable msgpack parameter checkpoint or does
        not match ``target``; the message names the path.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no parameter checkpoint at {path}") from None
    try:
        state = serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several unrelated exception types
        raise CheckpointError(f"{path} is not a readable msgpack parameter checkpoint "
                              f"(corrupt or truncated?): {type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a parameter checkpoint: it decodes to a "
                              f"{type(state).__name__}, not a dict")
    if state.get("format") == _FORMAT:
        if "params" not in state:
            raise CheckpointError(f"{path}: checkpoint header without parameters")
        state = state["params"]
    if target is None:
        return state
    try:
        return serialization.from_state_dict(target, state)
    except Exception as err:
        raise CheckpointError(f"{path} does not match the target structure: {err}") from err
