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
from typing import Any

import jax
from flax import serialization

PyTree = Any

__all__ = ["save_params", "load_params", "CheckpointError"]

_FORMAT = "kan_jax.params"
_VERSION = 1


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = serialization.to_state_dict(jax.device_get(params))
    payload = serialization.msgpack_serialize({"format": _FORMAT, "version": _VERSION, "params": state})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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
