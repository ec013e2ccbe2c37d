"""Shared pytest configuration.

Float64 is enabled for the whole test session so that references can be computed to 1e-12;
tests of float32 behaviour create float32 arrays explicitly (and dtype-preservation tests
therefore also catch accidental promotion to float64).
"""
from __future__ import annotations

from pathlib import Path

import jax
import pytest

from experiments._env import default_mnist_dir

jax.config.update("jax_enable_x64", True)

#: The genuine MNIST IDX files shared with the project (never downloaded at test time).
MNIST_DIR = default_mnist_dir()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"genuine MNIST IDX files expected in {MNIST_DIR} (set KAN_JAX_MNIST_DIR)")
    return MNIST_DIR
