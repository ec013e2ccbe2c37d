"""Every ```python block of README.md runs as written.

The blocks are executed in the order they appear, in one namespace, as a reader pasting them
into one Python session would: a block may use the names an earlier block defined (the KAN
layers example's ``model``, ``params``, ``x``...). A new block is picked up automatically;
keep each example cheap (small models, few steps) so this test stays at seconds.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\nb\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = x\n")]
    assert len(python_blocks(README.read_text())) >= 4


@pytest.fixture
def default_jax_config():
    """JAX as a reader has it: the test session's float64 switched off for this test."""
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", x64)


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch, default_jax_config):
    monkeypatch.chdir(tmp_path)  # files an example writes (figures) land here
    namespace: dict = {"__name__": "readme"}
    for line, code in python_blocks(README.read_text()):
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as err:  # name the block that failed
            pytest.fail(f"the README block at line {line} fails: {type(err).__name__}: {err}")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left
