"""experiments/_cli.py (configuration dataclass -> flags) and kan_jax.io (atomic writers)."""
from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Optional

import pytest

from experiments._cli import build_parser, option, parse
from kan_jax.io import save_figure, write_json


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = option(0.1, help="learning rate")
    steps: int = 10


@dataclasses.dataclass(frozen=True)
class Outer:
    seeds: tuple[int, ...] = option((1, 2, 3), help="seeds")
    name: str = option("a", choices=("a", "b"))
    limit: Optional[int] = None
    vmap: bool = option(True, flag="--no-vmap")
    force: bool = False
    out_dir: Path = Path("runs/x")
    opt: Inner = option(default_factory=Inner)
    flat: Inner = option(default_factory=lambda: Inner(lr=0.5), prefix="")
    hidden: int = option(0, cli=False)

    def __post_init__(self):
        if self.opt.steps < 1:
            raise ValueError(f"--opt-steps must be >= 1, got {self.opt.steps}")


PRESETS = {"full": Outer(), "quick": Outer(seeds=(7,), opt=Inner(steps=2))}


def test_flags_types_nesting_and_presets():
    assert parse(Outer, PRESETS, []) == Outer()
    cfg = parse(Outer, PRESETS, ["--seeds", "4", "5", "--name", "b", "--limit", "3", "--no-vmap", "--force",
                                 "--out-dir", "o", "--opt-lr", "0.25", "--lr", "2e-3", "--steps", "4"])
    assert cfg == Outer(seeds=(4, 5), name="b", limit=3, vmap=False, force=True, out_dir=Path("o"),
                        opt=Inner(lr=0.25), flat=Inner(lr=2e-3, steps=4))
    # --quick starts from the preset; a flag given explicitly wins over it
    assert parse(Outer, PRESETS, ["--quick"]) == PRESETS["quick"]
    cfg = parse(Outer, PRESETS, ["--quick", "--opt-steps", "9"])
    assert cfg.seeds == (7,) and cfg.opt.steps == 9
    text = build_parser(Outer, PRESETS).format_help()
    assert "--opt-lr" in text and "--hidden" not in text and "(default 1 2 3; --quick: 7)" in text


@pytest.mark.parametrize("argv, message", [
    (["--opt-steps", "0"], "--opt-steps must be >= 1, got 0"),
    (["--name", "c"], "invalid choice: 'c'"),
    (["--limit", "x"], "invalid int value: 'x'"),
    (["--unknown"], "unrecognized arguments: --unknown"),
])
def test_errors_exit_2_with_the_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(Outer, PRESETS, argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_presets_need_full():
    with pytest.raises(ValueError, match="presets must contain 'full'"):
        build_parser(Outer, {"quick": Outer()})


def test_write_json_and_save_figure_are_atomic(tmp_path):
    from matplotlib.figure import Figure

    path = write_json(tmp_path / "sub" / "r.json", {"a": [1, 2.5, None]})
    assert json.loads(path.read_text()) == {"a": [1, 2.5, None]} and path.read_text().endswith("\n")
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "f.png", dpi=50)
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", raw[16:24]) == (100, 50)
    pdf = save_figure(fig, tmp_path / "f.pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    with pytest.raises(ValueError):  # a failing writer leaves neither a file nor a temporary
        save_figure(fig, tmp_path / "g.notaformat")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png", "sub"]
