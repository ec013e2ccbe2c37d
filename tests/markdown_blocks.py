"""Run the ```python blocks of a Markdown page as a reader would (shared by the README and docs tests).

The blocks of one page are executed in the order they appear, in one namespace, as a reader
pasting them into one Python session would: a block may use the names an earlier block of the
same page defined. Each page starts from a fresh namespace.
"""
from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced ```python block of ``text``."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def run_page(path: Path, name: str) -> None:
    """Execute every ```python block of ``path`` in order in one namespace.

    Raises:
        AssertionError: naming the page and the line of the block that failed, with its error.
    """
    namespace: dict = {"__name__": name}
    for line, code in python_blocks(path.read_text()):
        try:
            exec(compile(code, f"{name}:{line}", "exec"), namespace)
        except Exception as err:  # name the block that failed
            raise AssertionError(f"the block of {name} at line {line} fails: {type(err).__name__}: {err}") from err
