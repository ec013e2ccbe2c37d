"""Tests of kan_jax.optim.sfn (SFN): steps on quadratics against numpy.linalg.eigh of the
augmented matrix in float64 and against the regularised Newton step it predicts, agreement with
HSODM's direction when the Hessian batch is the gradient batch, state and matvec counts,
schedules, jit and pytrees, argument errors, the module's example, and the MNIST experiment
(``python -m experiments.sfn --quick``) end to end."""
from __future__ import annotations

import doctest
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from kan_jax.optim import ScaleBySFNState, scale_by_hsodm, scale_by_sfn, sfn

N = 6  # quadratic dimension; N + 1 Lanczos steps span the whole augmented space


def quadratic(rng, eigenvalues):
    """``A = Q diag(eigenvalues) Q^T`` with a random rotation, a random ``b`` and point ``x``."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.asarray(eigenvalues)) @ q.T, rng.standard_normal(n), rng.standard_normal(n)


def reference_direction(a, g, delta, nu):
    """HSODM's rule from numpy.linalg.eigh of the dense augmented matrix (float64)."""
    evals, evecs = np.linalg.eigh(np.block([[a, g[:, None]], [g[None, :], -delta * np.ones((1, 1))]]))
    v, t = evecs[:-1, 0], evecs[-1, 0]
    d = v / t if abs(t) >= nu else v
    return (-d if g @ d > 0 else d), evals, v, t


INDEFINITE = (-2.0, -0.5, 0.3, 1.0, 2.0, 4.0)
POSITIVE = (0.5, 0.8, 1.0, 2.0, 3.0, 5.0)


@pytest.mark.parametrize("eigenvalues", [INDEFINITE, POSITIVE], ids=["indefinite", "positive-definite"])
def test_one_step_equals_the_step_of_the_exact_augmented_eigenpair(eigenvalues):
    """f(x) = x^T A x / 2 + b^T x: with N + 1 Lanczos steps the update is lr * v / t of eigh's
    leftmost eigenpair to 1e-9 relative, which is the regularised Newton step
    -lr (A - theta I)^{-1} g (numpy.linalg.solve); theta lies below min(lambda_min(A), -delta)."""
    rng = np.random.default_rng(0 if eigenvalues is INDEFINITE else 1)
    a, b, x = quadratic(rng, eigenvalues)
    g = a @ x + b
    lr, delta, nu = 0.7, 0.05, 1e-2
    tx = sfn(lr, delta=delta, num_lanczos_steps=N + 1, nu=nu)
    hvp = lambda v: jnp.asarray(a) @ v  # noqa: E731
    u, state = tx.update(jnp.asarray(g), tx.init(jnp.asarray(x)), jnp.asarray(x), hvp_fn=hvp)
    d, evals, v, t = reference_direction(a, g, delta, nu)
    assert evals[1] - evals[0] > 1e-2 and abs(t) >= nu  # an isolated eigenvalue, the Newton branch
    np.testing.assert_allclose(np.asarray(u), lr * d, rtol=0, atol=1e-9 * lr * np.linalg.norm(d))
    newton = -np.linalg.solve(a - evals[0] * np.eye(N), g)
    np.testing.assert_allclose(np.asarray(u), lr * newton, rtol=0, atol=1e-9 * lr * np.linalg.norm(newton))
    np.testing.assert_allclose(float(state.eigenvalue), evals[0], rtol=1e-10)
    assert evals[0] <= min(min(eigenvalues), -delta)
    assert g @ np.asarray(u) < 0  # a descent direction


def test_warm_started_second_step_and_state_contents():
    """Two steps on the indefinite quadratic: each update is eigh's at the current point; the
    state holds the unit eigenvector (v, t) up to sign, its eigenvalue with a residual below
    1e-8, the Newton flag, the count and N + 1 matvecs per step (the dimension caps 10 steps)."""
    a, b, x = quadratic(np.random.default_rng(2), INDEFINITE)
    delta, nu, lr = 1e-3, 1e-2, 0.5
    tx = sfn(lr, delta=delta, num_lanczos_steps=10, nu=nu)
    step = jax.jit(lambda x, s: tx.update(jnp.asarray(a) @ x + jnp.asarray(b), s, x, hvp_fn=lambda v: jnp.asarray(a) @ v))
    state = tx.init(jnp.asarray(x))
    assert isinstance(state, ScaleBySFNState) and int(state.count) == 0 and float(state.scalar) == 1.0
    for k in (1, 2):
        g = a @ x + b
        u, state = step(jnp.asarray(x), state)
        d, evals, v, t = reference_direction(a, g, delta, nu)
        np.testing.assert_allclose(np.asarray(u), lr * d, rtol=0, atol=1e-9 * lr * np.linalg.norm(d))
        sign = np.sign(t * float(state.scalar))
        np.testing.assert_allclose(sign * np.asarray(state.vector), v, atol=1e-9)
        np.testing.assert_allclose(sign * float(state.scalar), t, atol=1e-9)
        np.testing.assert_allclose(float(state.eigenvalue), evals[0], rtol=1e-10)
        assert float(state.residual) < 1e-8 and bool(state.used_newton)
        assert int(state.count) == k and int(state.num_matvecs) == k * (N + 1)
        x = x + np.asarray(u)


def test_small_t_takes_the_negative_curvature_direction():
    """f = -x0^2/2 + x1^2 at (0, 0.3): g is orthogonal to the leftmost eigenvector e0 of F
    (eigenvalue -1), so t = 0 < nu and the update is lr * (+-e0)."""
    h = jnp.diag(jnp.array([-1.0, 2.0]))
    x = jnp.array([0.0, 0.3])
    tx = sfn(0.25, delta=1e-4, num_lanczos_steps=3)
    u, state = tx.update(h @ x, tx.init(x), x, hvp_fn=lambda v: h @ v)
    np.testing.assert_allclose(np.abs(np.asarray(u)), [0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(float(state.eigenvalue), -1.0, rtol=1e-12)
    assert not bool(state.used_newton) and int(state.num_matvecs) == 3


def test_radius_caps_the_direction_before_the_step():
    """With radius r below ||d||, the update is lr * r * d / ||d|| (d from eigh)."""
    a, b, x = quadratic(np.random.default_rng(3), POSITIVE)
    g = a @ x + b
    d, *_ = reference_direction(a, g, 1e-4, 1e-2)
    r = 0.5 * np.linalg.norm(d)
    tx = sfn(2.0, delta=1e-4, num_lanczos_steps=N + 1, radius=r)
    u, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(x)), jnp.asarray(x), hvp_fn=lambda v: jnp.asarray(a) @ v)
    np.testing.assert_allclose(np.asarray(u), 2.0 * r * d / np.linalg.norm(d), rtol=1e-9)


def test_schedule_is_evaluated_at_the_update_count():
    """At a fixed point, update k (k = 0, 1, 2) is schedule(k) * d with d from eigh."""
    a, b, x = quadratic(np.random.default_rng(4), INDEFINITE)
    g = a @ x + b
    d, *_ = reference_direction(a, g, 1e-4, 1e-2)
    schedule = optax.exponential_decay(1.0, transition_steps=1, decay_rate=0.5)
    tx = sfn(schedule, delta=1e-4, num_lanczos_steps=N + 1)
    step = jax.jit(lambda s: tx.update(jnp.asarray(g), s, jnp.asarray(x), hvp_fn=lambda v: jnp.asarray(a) @ v))
    state = tx.init(jnp.asarray(x))
    for k in range(3):
        u, state = step(state)
        np.testing.assert_allclose(np.asarray(u), 0.5 ** k * d, rtol=0, atol=1e-9 * np.linalg.norm(d))


def test_pytree_params_under_jit_keep_structure_and_dtype():
    """Params {"w": (2, 3), "b": (3,)} on the quadratic of their raveled vector, hvp_fn by
    jax.jvp of jax.grad: the update has the params' structure and matches eigh (float64); in
    float32 the dtype is kept and the update agrees to float32 rounding."""
    a, b, x = quadratic(np.random.default_rng(5), POSITIVE + (6.0, 7.0, 8.0))
    for dtype, tol in ((jnp.float64, 1e-9), (jnp.float32, 1e-4)):
        unravel = ravel_pytree({"w": jnp.zeros((2, 3), dtype), "b": jnp.zeros(3, dtype)})[1]
        p0 = unravel(jnp.asarray(x, dtype))

        def f(p):
            z = ravel_pytree(p)[0]
            return 0.5 * z @ jnp.asarray(a, dtype) @ z + jnp.asarray(b, dtype) @ z

        tx = sfn(0.3, delta=1e-4, num_lanczos_steps=10)

        @jax.jit
        def step(p, s):
            hvp = lambda v: jax.jvp(jax.grad(f), (p,), (v,))[1]  # noqa: E731
            return tx.update(jax.grad(f)(p), s, p, hvp_fn=hvp)

        u, state = step(p0, tx.init(p0))
        assert jax.tree.structure(u) == jax.tree.structure(p0) == jax.tree.structure(state.vector)
        assert all(leaf.dtype == dtype for leaf in jax.tree.leaves((u, state.vector)))
        d, *_ = reference_direction(a, a @ x + b, 1e-4, 1e-2)
        ref = unravel(jnp.asarray(0.3 * d))
        for got, want in zip(jax.tree.leaves(u), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=0,
                                       atol=tol * 0.3 * np.linalg.norm(d))


def net(p, x):
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


@pytest.mark.parametrize("num_lanczos_steps", [14, 5])
def test_same_batch_for_gradient_and_hessian_gives_hsodms_direction(num_lanczos_steps):
    """A tanh network (13 parameters): SFN's direction with hvp_fn on the gradient's own batch
    is scale_by_hsodm's from value_fn on that batch, to 1e-9 relative with an exact eigensolve
    (14 = n + 1 steps) and with 5 steps (the same Krylov space from the same start)."""
    ks = jax.random.split(jax.random.key(7), 4)
    p = {"W1": jax.random.normal(ks[0], (2, 3)), "b1": jax.random.normal(ks[1], (3,)),
         "W2": jax.random.normal(ks[2], (3, 1)), "b2": jnp.zeros(1)}
    xb = jax.random.normal(ks[3], (64, 2))
    yb = jnp.sin(xb[:, :1])
    loss = lambda q: 0.5 * jnp.mean((net(q, xb) - yb) ** 2)  # noqa: E731
    g = jax.grad(loss)(p)
    kw = dict(delta=0.05, nu=1e-2, num_lanczos_steps=num_lanczos_steps)
    hs = scale_by_hsodm(**kw)
    ref, ref_state = jax.jit(lambda p: hs.update(g, hs.init(p), p, value_fn=loss))(p)
    tx = scale_by_sfn(**kw)
    hvp = lambda v: jax.jvp(jax.grad(loss), (p,), (v,))[1]  # noqa: E731
    d, state = jax.jit(lambda p: tx.update(g, tx.init(p), p, hvp_fn=hvp))(p)
    dn, rn = ravel_pytree(d)[0], ravel_pytree(ref)[0]
    np.testing.assert_allclose(np.asarray(dn), np.asarray(rn), rtol=0, atol=1e-9 * float(jnp.linalg.norm(rn)))
    np.testing.assert_allclose(float(state.eigenvalue), float(ref_state.eigenvalue), rtol=1e-10)
    assert int(state.num_matvecs) == int(ref_state.num_matvecs) == num_lanczos_steps


def test_bad_arguments_raise_naming_what_was_expected():
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="delta must be >= 0, got -1.0"):
        sfn(0.1, delta=-1.0)
    for steps in (1, 0, 2.5, "3"):
        with pytest.raises(ValueError, match=f"num_lanczos_steps must be an int >= 2, got {steps!r}"):
            sfn(0.1, num_lanczos_steps=steps)
    for nu in (0.0, 0.5, 0.7):
        with pytest.raises(ValueError, match=rf"nu must be in \(0, 1/2\) as in the paper, got {nu}"):
            scale_by_sfn(nu=nu)
    for radius in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"radius must be > 0 or None, got {radius}"):
            sfn(0.1, radius=radius)
    for lr in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="learning_rate must be a finite number > 0 or an optax schedule"):
            sfn(lr)
    tx = sfn(0.1)
    with pytest.raises(ValueError, match="needs hvp_fn="):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(x, tx.init(x), None, hvp_fn=lambda v: v)


def test_docstring_example_runs():
    result = doctest.testmod(importlib.import_module("kan_jax.optim.sfn"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_experiment_rejects_bad_arguments(capsys):
    from experiments import sfn as study

    for argv, message in ((["--optimizers", "sfn,newton"], "--optimizers must be a comma-separated subset of sfn, adam, sgd"),
                          (["--sfn-lanczos-steps", "1"], "num_lanczos_steps must be an int >= 2, got 1"),
                          (["--sfn-lr", "-1"], "--sfn-lr must be a finite number > 0, got -1.0"),
                          (["--lr-decay", "0"], "--lr-decay must be in (0, 1], got 0.0")):
        with pytest.raises(SystemExit) as err:
            study.main(argv)
        assert err.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_quick_experiment_end_to_end_and_resume(mnist_dir, tmp_path, capsys):
    """``--quick`` writes a record per model and optimiser (every epoch's full-set metrics, SFN's
    eigenvalue below -delta by interlacing and its matvecs per step), the figure and the table;
    the epoch-0 test loss is the mean cross-entropy of the initial model computed here; a rerun
    keeps every finished run and one whose record was removed is run again alone."""
    from experiments import sfn as study
    from experiments.models import mnist_arrays
    from kan_jax.data import load_mnist

    out = tmp_path / "sfn"
    argv = ["--quick", "--data-dir", str(mnist_dir), "--out-dir", str(out)]
    assert study.main(argv + ["--quiet"]) == 0
    cfg = study.PRESETS["quick"]
    runs = json.loads((out / "result.json").read_text())["runs"]
    assert set(runs) == {f"{m}_{o}" for m in study.MODELS for o in study.OPTIMIZERS}
    mnist = load_mnist(mnist_dir)
    x_test, y_test = mnist_arrays(mnist.x_test, mnist.y_test, cfg.test_subset)
    for model_name in study.MODELS:
        prep = study.prepare_model(model_name, cfg, x_test)
        logits = np.asarray(prep["model"].apply({"params": prep["params"], "grid": prep["grid"]}, x_test), np.float64)
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        loss0 = -np.mean(logp[np.arange(len(y_test)), np.asarray(y_test)])
        for opt in study.OPTIMIZERS:
            r = runs[f"{model_name}_{opt}"]
            assert len(r["epochs"]) == cfg.epochs + 1 and r["steps_per_epoch"] == 256 // cfg.batch_size
            assert r["epochs"][0]["test_loss"] == pytest.approx(loss0, rel=1e-5)
            for row in r["epochs"][1:]:
                assert 0 <= row["test_acc"] <= 1 and np.isfinite(row["train_loss"]) and row["seconds"] > 0
                if opt == "sfn":
                    assert row["hvps_per_step"] == cfg.sfn_lanczos_steps and row["eigenvalue"] <= -cfg.sfn_delta
    assert (out / "sfn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(line.startswith("| ") for line in (out / "summary.md").read_text().splitlines()) == 1 + 6
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    before = (out / "result.json").stat().st_mtime_ns
    assert study.main(argv + ["--no-plot"]) == 0
    assert capsys.readouterr().out.count("kept from result.json") == 6
    assert (out / "result.json").stat().st_mtime_ns == before
    del runs["mlp_sgd"]
    (out / "result.json").write_text(json.dumps({"runs": runs}))
    assert study.main(argv + ["--no-plot"]) == 0
    text = capsys.readouterr().out
    assert text.count("kept from result.json") == 5 and "mlp sgd epoch 2" in text
    assert set(json.loads((out / "result.json").read_text())["runs"]) == set(runs) | {"mlp_sgd"}
