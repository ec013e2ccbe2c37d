"""The documentation site: it builds with ``mkdocs build --strict``, and every ```python block
of every page runs as written (the blocks of one page in order, in one namespace, as the
README's; see ``markdown_blocks``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from markdown_blocks import python_blocks, run_page

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Every page of the site; the included results tables (``docs/results``) are not pages.
PAGES = sorted(p for p in DOCS.rglob("*.md") if "results" not in p.relative_to(DOCS).parts)
#: Pages with examples, run one by one.
EXAMPLE_PAGES = [p for p in PAGES if python_blocks(p.read_text())]


class _Loader(yaml.SafeLoader):
    """Reads mkdocs.yml's ``!!python/name:`` tags as plain strings."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix)


def _nav_files(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [f for v in nav.values() for f in _nav_files(v)]
    return [f for item in nav for f in _nav_files(item)]


def test_every_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
    nav = sorted(_nav_files(config["nav"]))
    assert nav == sorted(p.relative_to(DOCS).as_posix() for p in PAGES)


def test_pages_with_examples_are_found():
    names = {p.relative_to(DOCS).as_posix() for p in EXAMPLE_PAGES}
    assert {"layers.md", "optim.md", "curvature.md", "interpret.md"} <= names


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: every warning (a broken link, a missing include, a griffe
    warning about a docstring) fails the build."""
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-5000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "layer" / "index.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_python_blocks_run_in_order(page, tmp_path, monkeypatch, default_jax_config):
    monkeypatch.chdir(tmp_path)  # files an example writes (figures, checkpoints) land here
    run_page(page, f"docs/{page.relative_to(DOCS).as_posix()}")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left
