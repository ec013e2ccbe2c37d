"""Dense BFGS (kan_jax.optim.bfgs) against exact minimisers and its own secant condition."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax.optim import bfgs, scale_by_bfgs
from kan_jax.training import loops


def test_bfgs_reaches_the_minimiser_of_an_ill_conditioned_quadratic_and_rosenbrock():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 12))
    q = a @ a.T + np.diag(np.logspace(-2, 2, 12))
    b = rng.normal(size=12)
    out = loops.minimize(lambda x: 0.5 * x @ q @ x - b @ x, jnp.zeros(12), optimizer=bfgs(), num_steps=jnp.asarray(80))
    np.testing.assert_allclose(out.params, np.linalg.solve(q, b), rtol=1e-6, atol=1e-8)

    def rosenbrock(x):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    out = loops.minimize(rosenbrock, jnp.zeros(6), optimizer=bfgs(), num_steps=jnp.asarray(150))
    np.testing.assert_allclose(out.params, np.ones(6), atol=1e-6)


def test_inverse_hessian_meets_the_secant_condition_and_stays_symmetric():
    tx = scale_by_bfgs()
    x0, x1, x2 = (jnp.array(v) for v in ([0.0, 0.0, 0.0], [1.0, -0.5, 0.25], [0.5, 0.5, 2.0]))
    grad = lambda x: jnp.array([3 * x[0] + x[1], x[0] + 2 * x[1], 5 * x[2]]) + x ** 3
    state = tx.init(x0)
    for x in (x0, x1, x2):
        _, state = tx.update(grad(x), state, x)
    h = np.asarray(state.inv_hessian)
    s, y = np.asarray(x2 - x1), np.asarray(grad(x2) - grad(x1))
    np.testing.assert_allclose(h @ y, s, atol=1e-12)                  # H_k y_k = s_k
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(h) > 0)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grad(x0), state)
