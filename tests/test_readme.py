"""The README: every ```python block runs as written, and its performance table is the benchmark's.

The blocks are executed in the order they appear, in one namespace (``markdown_blocks``); keep
each example cheap (small models, few steps) so this test stays at seconds.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from markdown_blocks import python_blocks, run_page

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\nb\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = x\n")]
    assert len(python_blocks(README.read_text())) >= 5


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def _table(text: str, header_start: str) -> list[dict[str, str]]:
    """Rows (header -> cell) of the first Markdown table whose header starts with ``header_start``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            cells = lambda row: [c.strip() for c in row.strip().strip("|").split("|")]
            header, rows = cells(line), []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(row))))
            return rows
    raise AssertionError(f"no table with a header starting {header_start!r}")


def _section(text: str, marker: str) -> str:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    assert begin in text and end in text, f"{marker!r} markers expected in benchmarks/RESULTS.md"
    return text[text.index(begin):text.index(end)]


def test_readme_performance_table_is_the_benchmarks():
    """Every cell of README's G-scaling table equals the one in benchmarks/RESULTS.md (written
    by ``python -m benchmarks.spline_scaling``), the speed-up their ratio to its rounding."""
    bench = {r["G"]: r for r in _table(_section(RESULTS.read_text(), "spline_scaling cpu"), "| G |")}
    readme = _table(README.read_text(), "| G | strategy |")
    assert readme and {r["G"] for r in readme} <= set(bench)
    num = lambda s: float(re.sub(r"[×,`]", "", s))
    for r in readme:
        b = bench[r["G"]]
        assert r["strategy"] == b["auto picks"], r["G"]
        assert num(r["kan-jax step (ms)"]) == num(b[f"{b['auto picks']} (ms/step)"]), r["G"]
        assert num(r["efficient-kan step (ms)"]) == num(b["efficient-kan (ms/step)"]), r["G"]
        assert num(r["compile (s)"]) == num(b["compile, auto (s)"]), r["G"]
        assert num(r["`model.init` (s)"]) == num(b["`model.init` (s)"]), r["G"]
        ratio = num(r["efficient-kan step (ms)"]) / num(r["kan-jax step (ms)"])
        assert abs(num(r["speed-up"]) - ratio) <= 0.05 + 1e-9, r["G"]


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch, default_jax_config):
    monkeypatch.chdir(tmp_path)  # files an example writes (figures) land here
    run_page(README, "README.md")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left
