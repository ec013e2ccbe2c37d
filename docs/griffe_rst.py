"""A griffe extension: the reST bits of kan-jax's docstrings, rendered as Markdown.

kan-jax writes docstrings as optax and Flax do (Google style with reST roles and math). The
API reference is Markdown, so before griffe parses a docstring this extension rewrites:

* roles (``:func:`~a.b.c```, ``:class:`x```, ...) to inline code (``c``, ``x``);
* ``:math:`x``` to inline math and ``.. math::`` blocks to display math (``pymdownx.arithmatex``);
* an ``Example:`` section title to ``Examples:``, so its ``>>>`` lines render as code;
* double backquotes to single ones.

Loaded by mkdocstrings (``extensions`` in ``mkdocs.yml``).
"""
from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const|ref|doc|term):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_DOUBLE_TICKS = re.compile(r"``([^`]+?)``")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    target = re.sub(r"<([^>]+)>$", r"\1", target).strip()  # "text <target>" -> target
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_blocks(text: str) -> str:
    """``.. math:: a`` (+ indented continuation lines) -> ``$$ a $$`` at the same indent."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m.group(1), [m.group(2)] if m.group(2).strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        out += [f"{indent}$$", *(f"{indent}{b}" for b in body if b), f"{indent}$$", ""]
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The docstring ``text`` with its reST constructs turned into Markdown."""
    text = _ROLE.sub(_role, text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    text = _math_blocks(text)
    text = _EXAMPLE.sub(r"\1Examples:", text)
    return _DOUBLE_TICKS.sub(r"`\1`", text)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of a loaded package before it is parsed."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: Any) -> None:
            if obj.is_alias or id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value)
            for member in obj.members.values():
                visit(member)

        visit(pkg)
