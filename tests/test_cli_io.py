"""experiments/_cli.py (configuration dataclass -> flags), experiments/publish.py and kan_jax.io
(atomic writers)."""
from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Optional

import pytest

from experiments import hello_kan, publish
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


@dataclasses.dataclass(frozen=True)
class Listed:
    widths: tuple[int, ...] = option((5,), flag="--width", separator=",")
    names: tuple[str, ...] = option(("a", "b"), separator=",")


def test_separator_tuples_and_the_preset_flag(capsys):
    presets = {"full": Listed(), "small": Listed(widths=(2,))}
    assert parse(Listed, presets, ["--width", "3,4", "--names", "x"]) == Listed(widths=(3, 4), names=("x",))
    assert parse(Listed, presets, ["--preset", "small"]) == parse(Listed, presets, ["--small"]) == presets["small"]
    assert "(default 5; --small: 2)" in build_parser(Listed, presets).format_help()
    with pytest.raises(SystemExit) as exc:
        parse(Listed, presets, ["--width", "3,x"])
    assert exc.value.code == 2 and "--width must be comma-separated integers, got '3,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(Listed, presets, ["--preset", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_publish_writes_hello_kan_results_and_names_missing_runs(tmp_path, capsys):
    """A hello_kan record (written by hand here) becomes the documentation's table; a study asked
    for without outputs, or no outputs at all, is exit status 2."""
    stage = {"widths": [2, 5, 1], "alive_edges": 15, "train_rmse": 1.5e-3, "test_rmse": 2.25e-3}
    result = {"config": {"target": "x1 + x2"}, "chosen_attempt": 0, "attempts": [{}], "formula_display": "x1 + x2",
              "formula_rel_rmse": 1e-7, "jax": "0.0", "stages": {"init": stage, "symbolic": {**stage, "widths": [2, 1, 1]}}}
    write_json(tmp_path / "runs" / "hello_kan" / "result.json", result)
    assert publish.main([str(tmp_path / "runs"), str(tmp_path / "docs")]) == 0
    text = (tmp_path / "docs" / "hello_kan.md").read_text()
    assert text == publish.render("hello_kan", tmp_path / "runs" / "hello_kan")
    assert "`x1 + x2`" in text and "| init | [2, 5, 1] | 15 | 1.500e-03 | 2.250e-03 |" in text
    assert "| symbolic | [2, 1, 1] |" in text and hello_kan.published_markdown(tmp_path / "runs" / "hello_kan") in text
    capsys.readouterr()
    assert publish.main([str(tmp_path / "runs"), str(tmp_path / "docs"), "--studies", "mnist"]) == 2
    assert "no outputs of mnist" in capsys.readouterr().err
    assert publish.main([str(tmp_path / "nothing"), str(tmp_path / "docs")]) == 2


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
