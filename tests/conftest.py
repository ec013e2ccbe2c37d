"""Shared pytest configuration.

Float64 is enabled for the whole test session so that references can be computed to 1e-12;
tests of float32 behaviour create float32 arrays explicitly (and dtype-preservation tests
therefore also catch accidental promotion to float64).

The default run is bound by XLA compilation (hundreds of small programs), so it switches off
the CPU backend's LLVM optimisation (``--xla_backend_optimization_level=0``; the same IEEE
results, compiled about a third faster); the slow run (``-m slow``: the studies and their
published numbers) keeps XLA's defaults. In both, the workers share compiled programs through
JAX's persistent compilation cache in ``.pytest_cache/jax``.
"""
from __future__ import annotations

from pathlib import Path

import jax
import pytest

from experiments._env import add_xla_flag, default_mnist_dir

jax.config.update("jax_enable_x64", True)

#: XLA flag of the default run (see the module docstring).
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def pytest_configure(config: pytest.Config) -> None:
    """The test runs' compilation settings (module docstring), before JAX starts its backend."""
    if config.getoption("markexpr") == "not slow":
        add_xla_flag(FAST_COMPILE_FLAG)
    jax.config.update("jax_compilation_cache_dir", str(Path(str(config.rootpath)) / ".pytest_cache" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.02)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

#: The genuine MNIST IDX files shared with the project (never downloaded at test time).
MNIST_DIR = default_mnist_dir()
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder of the genuine MNIST IDX files; every test that needs them is skipped without them."""
    missing = [name for name in MNIST_FILES if not (MNIST_DIR / name).is_file()]
    if missing:
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR} (missing {', '.join(missing)}; "
                    "set KAN_JAX_MNIST_DIR to the folder holding them)")
    return MNIST_DIR


@pytest.fixture
def default_jax_config():
    """JAX as a reader has it: the test session's float64 switched off for this test."""
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", x64)
