"""Datasets, one module per concept.

* :mod:`kan_jax.data.idx`: the IDX file format and ``SHA256SUMS`` checks; :class:`DataError`;
* :mod:`kan_jax.data.mnist`: MNIST from IDX files (or tfds): :func:`load_mnist`,
  :func:`preprocess_mnist`;
* :mod:`kan_jax.data.tfds`: the optional tensorflow-datasets path: :func:`prepare_tfds_mnist`;
* :mod:`kan_jax.data.toy`: pykan-style toy regression data: :func:`create_dataset`.

The names below are importable from ``kan_jax.data`` directly. Sources, checks and the tfds
path: ``docs/data.md``.
"""
from __future__ import annotations

from typing import Any

from kan_jax.data.idx import DataError, read_idx, verify_checksums
from kan_jax.data.mnist import (
    MNIST,
    MNIST_ENV_VAR,
    MNIST_FILES,
    MNIST_SHA256,
    MNIST_URL,
    load_mnist,
    preprocess_mnist,
)
from kan_jax.data.toy import create_dataset

__all__ = [
    "DataError",
    "MNIST",
    "MNIST_ENV_VAR",
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


def prepare_tfds_mnist(*args: Any, **kwargs: Any) -> Any:
    """:func:`kan_jax.data.tfds.prepare_tfds_mnist` (imported on first use: tfds is optional)."""
    from kan_jax.data.tfds import prepare_tfds_mnist as prepare

    return prepare(*args, **kwargs)
