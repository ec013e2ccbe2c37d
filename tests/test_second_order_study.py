"""The second-order comparison study (`python -m experiments.second_order`) end to end.

A ``--quick`` run (both problems, all four methods, a few steps each) runs once in-process; its
JSON is checked against references the test computes itself: the loss at the initial point,
each method's cost accounting, and the minimum Hessian eigenvalue reported at the final point
against ``numpy.linalg.eigvalsh`` of ``jax.hessian`` there (KAN) within the reported residual.
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import publish
from experiments import second_order as study
from kan_jax import load_params

pytestmark = pytest.mark.slow  # one --quick study shared by every test here (about 30 s)


@pytest.fixture(scope="module")
def quick(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("second_order_quick")
    assert study.main(["--quick", "--data-dir", str(mnist_dir), "--out-dir", str(out), "--quiet"]) == 0
    return out


def test_quick_run_writes_every_output(quick):
    names = {p.name for p in quick.iterdir()}
    expected = {f"{p}_{m}.json" for p in study.PROBLEMS for m in study.METHODS} | {"second_order.png", "summary.md"}
    assert expected <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    assert (quick / "second_order.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (quick / "summary.md").read_text()
    assert text.count("\n| kan |") == 4 and text.count("\n| mlp |") == 4


def test_records_are_consistent(quick):
    cfg = study.PRESETS["quick"]
    kan = study._kan_problem(cfg)
    f0 = float(kan["loss"](kan["params"], kan["batch"]))
    for problem in study.PROBLEMS:
        for method in study.METHODS:
            r = json.loads((quick / f"{problem}_{method}.json").read_text())
            steps = cfg.steps(problem, method)
            assert r["steps"] == steps and len(r["loss"]) == steps and len(r["cost"]) == steps
            cost = np.asarray(r["cost"])
            assert np.all(np.diff(cost) >= 1)  # at least one gradient-equivalent per step
            if method in ("adam", "dgclip"):
                np.testing.assert_array_equal(cost, np.arange(1, steps + 1))
            if method == "hsodm":  # Lanczos HVPs + the primal pass + >= 1 line-search evaluation
                assert np.all(np.diff(cost) >= cfg.hsodm_lanczos_steps + 2)
            assert np.all(np.isfinite(r["loss"])) and r["final_loss"] is not None
            if problem == "kan":
                assert r["loss"][0] == pytest.approx(f0, rel=1e-12)  # the same start for every method
                assert r["final_loss"] < f0
    # HSODM and L-BFGS decrease the loss monotonically (line searches with sufficient decrease)
    for problem in study.PROBLEMS:
        for method in ("hsodm", "lbfgs"):
            r = json.loads((quick / f"{problem}_{method}.json").read_text())
            assert np.all(np.diff(r["loss"]) <= 1e-12 * abs(r["loss"][0]))


def test_reported_min_eigenvalue_matches_dense_eigh_at_final_point(quick):
    """The reported Lanczos lambda_min at each KAN method's saved final point against eigh of
    jax.hessian there: a Ritz value with residual r has an eigenvalue within r of it (Kahan's
    bound for symmetric matrices) and never lies below the smallest eigenvalue; where the quick
    run's few Lanczos steps converged (residual below 1e-6) it is the smallest one."""
    cfg = study.PRESETS["quick"]
    prob = study._kan_problem(cfg)
    hess = jax.jit(lambda x, unravel=ravel_pytree(prob["params"])[1]:
                   jax.hessian(lambda z: prob["loss"](unravel(z), prob["batch"]))(x))
    for method in study.METHODS:
        r = json.loads((quick / f"kan_{method}.json").read_text())
        params = load_params(quick / f"kan_{method}.msgpack", prob["params"])
        assert float(prob["loss"](params, prob["batch"])) == pytest.approx(r["final_loss"], rel=1e-10)
        h = np.asarray(hess(ravel_pytree(params)[0]))
        eigs = np.linalg.eigvalsh(0.5 * (h + h.T))
        theta, res = r["lambda_min_lanczos"], r["lambda_min_residual"]
        assert np.min(np.abs(eigs - theta)) <= res + 1e-10, method
        assert theta >= eigs[0] - 1e-10, method
        if res < 1e-6:
            assert abs(theta - eigs[0]) <= 1e-6, method


def test_rerun_resumes_and_bad_arguments_fail(quick, capsys):
    before = (quick / "kan_adam.json").stat().st_mtime_ns
    assert study.main(["--quick", "--problems", "kan", "--methods", "adam", "--out-dir", str(quick)]) == 0
    assert (quick / "kan_adam.json").stat().st_mtime_ns == before
    assert "kept kan_adam.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        study.main(["--methods", "adam,newton"])
    assert err.value.code == 2
    assert "--methods must be a comma-separated subset of adam, dgclip, lbfgs, hsodm; got 'adam,newton'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--preset", "huge"])
    with pytest.raises(ValueError, match="mlp_num must be <= 60000"):
        study.Config(mlp_num=70_000)


def test_quick_run_publishes_its_table(quick, tmp_path):
    """The published table holds one row per record, with the record's own numbers."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "second_order").symlink_to(quick)
    assert publish.main([str(runs), str(tmp_path / "docs"), "--studies", "second_order"]) == 0
    table = (tmp_path / "docs" / "second_order.md").read_text()
    assert table.count("\n| kan |") == 4 and table.count("\n| mlp |") == 4
    for problem in study.PROBLEMS:
        for method in study.METHODS:
            r = json.loads((quick / f"{problem}_{method}.json").read_text())
            assert f"| {problem} | {method} | {r['steps']} | {r['cost'][-1]:.0f} | {r['seconds']:.2f} | {r['final_loss']:.4g} |" in table
