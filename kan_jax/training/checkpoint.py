"""Saving and loading parameter pytrees (msgpack via :mod:`flax.serialization`).

A checkpoint file holds a small header and the parameters' Flax *state dict*
(:func:`flax.serialization.to_state_dict`: nested dicts with string keys, arrays as numpy
arrays, dtypes including bfloat16 kept), serialised with
:func:`flax.serialization.msgpack_serialize`. Files are written atomically
(:func:`kan_jax.io.atomic_write`), so a crash never leaves a half-written checkpoint under the
final name. Plain ``flax.serialization.to_bytes`` files are read as well.

:func:`save_checkpoint` / :func:`load_checkpoint` store a whole training state the same way
(any pytree: params, grid, optimiser state, PRNG key data) together with JSON metadata (epoch,
history, configuration), so a run can continue from it.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> from kan_jax.training.checkpoint import load_params, save_params
    >>> params = {"w": jnp.arange(3.0)}
    >>> path = save_params(tempfile.mkdtemp() + "/theta0.msgpack", params)
    >>> load_params(path, target=params)["w"].tolist()   # the same structure back
    [0.0, 1.0, 2.0]
    >>> sorted(load_params(path))                         # nested dicts of numpy arrays
    ['w']
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from kan_jax.io import atomic_write

PyTree = Any

__all__ = ["save_params", "load_params", "save_checkpoint", "load_checkpoint", "CheckpointError"]

_FORMAT = "kan_jax.params"
_FORMAT_STATE = "kan_jax.train_state"
_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as a parameter checkpoint."""


def save_params(path: str | os.PathLike, params: PyTree) -> Path:
    """Write a parameter pytree to ``path`` atomically (msgpack).

    Args:
        path: the destination file; parent directories are created.
        params: any pytree Flax can turn into a state dict (dicts, lists, tuples, NamedTuples,
            ``flax.struct`` dataclasses, arrays, scalars).

    Returns:
        The path written.
    """
    state = serialization.to_state_dict(jax.device_get(params))
    payload = serialization.msgpack_serialize({"format": _FORMAT, "version": _VERSION, "params": state})
    return atomic_write(path, payload)


def load_params(path: str | os.PathLike, target: PyTree | None = None) -> PyTree:
    """Read a parameter pytree written by :func:`save_params`.

    Args:
        path: the checkpoint file.
        target: a pytree of the expected structure (e.g. freshly initialised params). When
            given, the result has exactly that structure
            (:func:`flax.serialization.from_state_dict`); without it the raw state dict comes
            back: nested dicts with string keys and numpy leaves (lists and tuples as dicts
            keyed ``"0"``, ``"1"``, ...).

    Returns:
        The parameters.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        CheckpointError: (a ``ValueError``) the file is not a readable msgpack parameter
            checkpoint or does not match ``target``; the message names the path.
    """
    path = Path(path)
    state = _read_msgpack(path, "parameter")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a parameter checkpoint: it decodes to a "
                              f"{type(state).__name__}, not a dict")
    if state.get("format") == _FORMAT:
        if "params" not in state:
            raise CheckpointError(f"{path}: checkpoint header without parameters")
        state = state["params"]
    return state if target is None else _restore_into(target, state, path)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, metadata: dict[str, Any]) -> Path:
    """Write a training-state pytree and JSON metadata to ``path`` atomically (msgpack).

    Args:
        path: the destination file; parent directories are created.
        tree: e.g. a ``TrainState`` (params, grid, optax state) and PRNG key data
            (``jax.random.key_data``); typed PRNG keys cannot be stored directly.
        metadata: anything :func:`json.dumps` accepts (epoch, per-epoch history,
            configuration).

    Returns:
        The path written.
    """
    state = serialization.to_state_dict(jax.device_get(tree))
    payload = serialization.msgpack_serialize(
        {"format": _FORMAT_STATE, "version": _VERSION, "tree": state, "metadata": json.dumps(metadata)}
    )
    return atomic_write(path, payload)


def load_checkpoint(path: str | os.PathLike, target: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Read ``(tree, metadata)`` written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        target: a pytree of the expected structure (e.g. a freshly initialised training
            state); the result has exactly its structure, with numpy leaves.

    Returns:
        ``(tree, metadata)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a training-state checkpoint or does not match
            ``target``.
    """
    path = Path(path)
    state = _read_msgpack(path, "training-state")
    if not isinstance(state, dict) or state.get("format") != _FORMAT_STATE:
        raise CheckpointError(f"{path} is not a training-state checkpoint (expected format {_FORMAT_STATE!r})")
    return _restore_into(target, state["tree"], path), json.loads(state["metadata"])


def _read_msgpack(path: Path, kind: str) -> Any:
    """The decoded msgpack content of ``path``; errors name the file and the ``kind`` of checkpoint."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no {kind} checkpoint at {path}") from None
    try:
        return serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several unrelated exception types
        raise CheckpointError(f"{path} is not a readable msgpack {kind} checkpoint "
                              f"(corrupt or truncated?): {type(err).__name__}: {err}") from err


def _restore_into(target: PyTree, state: Any, path: Path) -> PyTree:
    """``state`` in the structure of ``target``; a mismatch is a :class:`CheckpointError` naming ``path``."""
    try:
        restored = serialization.from_state_dict(target, state)
    except Exception as err:
        raise CheckpointError(f"{path} does not match the target structure: {err}") from err
    # from_state_dict keeps the stored arrays as they are: check their shapes against the target.
    wanted = jax.tree_util.tree_flatten_with_path(target)[0]
    got = jax.tree_util.tree_leaves(restored)
    for (key_path, want), have in zip(wanted, got):
        if hasattr(want, "shape") and tuple(np.shape(have)) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: {jax.tree_util.keystr(key_path)} has shape {tuple(np.shape(have))}, "
                f"the target expects {tuple(want.shape)}"
            )
    return restored
