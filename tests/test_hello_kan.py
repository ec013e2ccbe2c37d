"""experiments.hello_kan: the --quick tutorial end to end (figures, result.json, resume) and
argument errors in-process."""
from __future__ import annotations

import json

import numpy as np
import pytest
import sympy

from experiments import hello_kan


@pytest.mark.slow
def test_quick_end_to_end_writes_figures_formula_and_resumes(tmp_path, capsys):
    out = tmp_path / "hello"
    # --tol 0 accepts no attempt, so both attempts run and the lower final train RMSE wins
    argv = ["--quick", "--restarts", "1", "--tol", "0", "--out-dir", str(out)]
    assert hello_kan.main(argv) == 0
    for stage in ("init", "trained", "pruned", "symbolic"):
        assert (out / f"{stage}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "result.json").read_text())
    formula = sympy.sympify(result["formula"])
    assert {str(s) for s in formula.free_symbols} <= {"x1", "x2"}
    # the quick run (200 points, few iterations) still fits the tutorial's target closely
    assert np.isfinite(result["test_rmse"]) and result["test_rmse"] < 0.1
    assert result["stages"]["init"]["widths"] == [2, 5, 1]
    assert result["stages"]["pruned"]["widths"][0] == 2 and result["stages"]["pruned"]["widths"][-1] == 1
    # the formula is the model: evaluated with its 6-decimal constants it matches the test RMSE scale
    assert result["formula_rel_rmse"] < 0.1
    attempts = result["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1] and not any(a["accepted"] for a in attempts)
    chosen = int(np.argmin([a["train_rel_rmse"] for a in attempts]))
    assert result["chosen_attempt"] == chosen and result["train_rmse"] == attempts[chosen]["train_rmse"]
    assert result["formula"] == attempts[chosen]["formula"]
    capsys.readouterr()
    assert hello_kan.main(argv) == 0  # rerun: finds the result, does nothing
    assert "already holds this configuration" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "sin(y)"], "only the variables x1, x2"),
        (["--target", "sin(("], "SymPy expression"),
        (["--width", "5,a"], "--width must be comma-separated integers"),
        (["--width", "0"], "hidden widths >= 1"),
        (["--steps", "1,2"], "one or three integers"),
        (["--lamb", "-1"], "--lamb must be >= 0"),
        (["--restarts", "-1"], "--restarts must be >= 0"),
        (["--tol", "-1"], "--tol must be >= 0"),
    ],
)
def test_argument_errors(argv, message, capsys, tmp_path):
    assert hello_kan.main(argv + ["--out-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_parse_target_reads_the_number_of_variables():
    expr, variables = hello_kan.parse_target("x1 + x3**2")
    assert [str(v) for v in variables] == ["x1", "x2", "x3"]
    assert expr == sympy.Symbol("x1") + sympy.Symbol("x3") ** 2


@pytest.mark.parametrize(
    "rel, tol, want",
    [
        ([0.5, 1e-16, 1e-17], 1e-6, 1),  # the first accepted one, not the lowest
        ([0.5, float("nan"), 0.2, 0.3], 1e-6, 2),  # none accepted: the lowest; NaN never wins
        ([0.2, 0.2], 1e-6, 0),  # equals: the earlier
        ([float("nan")], 1e-6, 0),
        ([1e-16, 0.0], 0.0, 1),
    ],
)
def test_choose_attempt(rel, tol, want):
    assert hello_kan.choose_attempt(rel, tol) == want


def test_choose_attempt_needs_attempts():
    with pytest.raises(ValueError, match="no attempts"):
        hello_kan.choose_attempt([], 1e-6)
