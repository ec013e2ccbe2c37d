"""The shared optimisation loops (kan_jax.training.loops) against independent references."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize as sopt

from kan_jax.training import loops


def _quadratic(x, a, b):
    return 0.5 * x @ a @ x - b @ x


def _spd(rng: np.random.Generator, n: int, cond: float = 20.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.geomspace(1.0, cond, n)) @ q.T


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_lbfgs_finds_the_minimiser_of_a_quadratic():
    """L-BFGS reaches ``A^{-1} b`` (numpy's solve) to 1e-8 in float64."""
    rng = np.random.default_rng()
    a, b = _spd(rng, 8), rng.standard_normal(8)
    out = loops.lbfgs(_quadratic, jnp.zeros(8), jnp.asarray(a), jnp.asarray(b), num_steps=40)
    np.testing.assert_allclose(out.params, np.linalg.solve(a, b), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(out.value, _quadratic(np.linalg.solve(a, b), a, b), rtol=1e-10)
    assert float(out.grad_norm) < 1e-7


def test_lbfgs_on_rosenbrock_matches_scipy():
    """The 4-D Rosenbrock function from a random start: the same minimiser as scipy's L-BFGS-B (1e-6)."""
    x0 = np.random.default_rng().uniform(-1.5, 1.5, 4)
    ref = sopt.minimize(lambda x: float(_rosenbrock(jnp.asarray(x))), x0, jac=lambda x: np.asarray(jax.grad(_rosenbrock)(jnp.asarray(x))),
                        method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 2000})
    out = loops.lbfgs(_rosenbrock, jnp.asarray(x0), num_steps=jnp.asarray(300))
    np.testing.assert_allclose(out.params, ref.x, atol=1e-6)


def test_adam_matches_the_published_update():
    """Twenty Adam steps against the update of Kingma & Ba written out in numpy (rtol 1e-10)."""
    rng = np.random.default_rng()
    a, b, x = _spd(rng, 5), rng.standard_normal(5), rng.standard_normal(5)
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    ref, m, v = x.copy(), np.zeros(5), np.zeros(5)
    for t in range(1, 21):
        g = a @ ref - b
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        ref = ref - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    out = loops.adam(_quadratic, jnp.asarray(x), jnp.asarray(a), jnp.asarray(b), num_steps=20, learning_rate=lr)
    np.testing.assert_allclose(out.params, ref, rtol=1e-10)


def test_minimize_records_the_objective_before_each_step():
    """Gradient descent on ``|x|^2`` with step 1/4 halves x: values ``|x0|^2 4^-i``, rows past the end NaN."""
    x0 = np.random.default_rng().standard_normal(3)
    out = loops.minimize(lambda x: jnp.sum(x**2), jnp.asarray(x0), optimizer=optax.sgd(0.25),
                         num_steps=jnp.asarray(4), history_size=6, monitor=lambda x: jnp.sum(x**2))
    expected = np.sum(x0**2) * 0.25 ** np.arange(4)
    np.testing.assert_allclose(out.history.value[:4], expected, rtol=1e-12)
    np.testing.assert_allclose(out.history.grad_norm[:4], 2 * np.sqrt(expected), rtol=1e-12)
    np.testing.assert_allclose(out.history.monitor[:4], expected * 0.25, rtol=1e-12)  # after each step
    assert np.all(np.isnan(out.history.value[4:])) and np.all(np.isnan(out.history.monitor[4:]))
    assert out.history.num_evals.tolist() == [1, 1, 1, 1, 0, 0]
    np.testing.assert_allclose(out.params, x0 / 16, rtol=1e-12)


def test_traced_step_count_compiles_once_and_matches_a_static_count():
    """Property: an array step count reuses one compilation; a Python int gives the same iterates."""
    traces = []

    def fun(x, c):
        traces.append(None)
        return jnp.sum((x - c) ** 4) + jnp.sum((x - c) ** 2)

    c = jnp.asarray(np.random.default_rng().standard_normal(6))
    traced = loops.lbfgs(fun, jnp.zeros(6), c, num_steps=jnp.asarray(12), history_size=12)
    seen = len(traces)
    assert seen > 0
    again = loops.lbfgs(fun, jnp.zeros(6), c + 1, num_steps=jnp.asarray(7), history_size=12)
    assert len(traces) == seen  # new data and a new count: no new trace
    assert np.all(np.isnan(again.history.value[7:])) and np.all(np.isfinite(again.history.value[:7]))
    static = loops.lbfgs(fun, jnp.zeros(6), c, num_steps=12, history_size=12)
    np.testing.assert_allclose(traced.params, static.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(traced.history.value, static.history.value, rtol=1e-9, atol=1e-15)


def test_opt_state_continues_a_run():
    """Property: 5 + 7 L-BFGS steps passing the state on equal one run of 12 (1e-12)."""
    rng = np.random.default_rng()
    a, b = jnp.asarray(_spd(rng, 6, cond=1e3)), jnp.asarray(rng.standard_normal(6))
    whole = loops.lbfgs(_quadratic, jnp.zeros(6), a, b, num_steps=jnp.asarray(12))
    first = loops.lbfgs(_quadratic, jnp.zeros(6), a, b, num_steps=jnp.asarray(5))
    second = loops.lbfgs(_quadratic, first.params, a, b, num_steps=jnp.asarray(7), opt_state=first.opt_state)
    np.testing.assert_allclose(second.params, whole.params, rtol=1e-12, atol=1e-14)


def test_num_evals_counts_every_evaluation():
    """The recorded evaluations plus the final one equal the calls a host callback counts."""
    calls = []

    def fun(x):
        jax.debug.callback(lambda: calls.append(None))
        return _rosenbrock(x)

    out = loops.lbfgs(fun, jnp.asarray(np.random.default_rng().uniform(-1, 1, 3)), num_steps=15, history_size=15)
    jax.effects_barrier()
    assert int(np.sum(out.history.num_evals)) + 1 == len(calls)
    assert int(out.history.num_evals[0]) >= 2  # the first step evaluates before its line search


def test_skip_nonfinite_drops_bad_steps():
    """``sum(sqrt(x))`` by gradient descent from 1: the third step's gradient is NaN, so it and every
    later step are dropped and x stays at ``1 - 1/2 - 1/(2 sqrt(1/2))``."""
    out = loops.minimize(lambda x: jnp.sum(jnp.sqrt(x)), jnp.ones(1), optimizer=optax.sgd(1.0),
                         num_steps=5, history_size=5, skip_nonfinite=True)
    assert out.history.skipped.tolist() == [False, False, True, True, True]
    np.testing.assert_allclose(out.params, [0.5 - 0.5 / np.sqrt(0.5)], rtol=1e-12)
    plain = loops.minimize(lambda x: jnp.sum(jnp.sqrt(x)), jnp.ones(1), optimizer=optax.sgd(1.0), num_steps=5)
    assert np.isnan(plain.params[0])


@pytest.mark.parametrize("num_steps", [0, 3])
def test_static_history_is_cut_or_padded(num_steps):
    """A static count with a longer history pads with NaN; zero steps return the start unchanged."""
    x0 = jnp.asarray([2.0])
    out = loops.minimize(lambda x: jnp.sum(x**2), x0, optimizer=optax.sgd(0.25), num_steps=num_steps, history_size=4)
    assert out.history.value.shape == (4,)
    assert np.all(np.isnan(out.history.value[num_steps:]))
    np.testing.assert_allclose(out.params, x0 * 0.5**num_steps)


def test_wrong_keywords_name_what_is_expected():
    with pytest.raises(TypeError, match="expected num_steps"):
        loops.lbfgs(_rosenbrock, jnp.zeros(2), steps=3)
    with pytest.raises(TypeError, match=r"got \['num_steps', 'step_size'\]"):
        loops.adam(_rosenbrock, jnp.zeros(2), num_steps=3, step_size=0.1)
