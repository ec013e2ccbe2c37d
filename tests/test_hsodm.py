"""Tests of kan_jax.optim.hsodm (HSODM): the direction against eigh of the dense augmented
matrix (float64, jax.hessian), the small-|t| branch, convergence on Rosenbrock and on a small
network against plain gradient descent."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from kan_jax.optim import ScaleByHSODMState, hsodm, scale_by_hsodm


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def net(p, x):
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def init_net(key, hidden=3, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"W1": jax.random.normal(k1, (2, hidden), dtype), "b1": 0.1 * jax.random.normal(k3, (hidden,), dtype),
            "W2": jax.random.normal(k2, (hidden, 1), dtype) / np.sqrt(hidden), "b2": jnp.zeros(1, dtype)}


X = jax.random.normal(jax.random.key(1), (128, 2), jnp.float64)
Y = net(init_net(jax.random.key(2)), X)          # teacher-student: a realisable regression
P0 = init_net(jax.random.key(3))                 # n = 13 parameters


def student_loss(p):
    return 0.5 * jnp.mean((net(p, X) - Y) ** 2)


def run(tx, f, p0, steps):
    """``steps`` updates in one lax.scan; returns final params and per-step gradient norms."""

    def step(c, _):
        p, s = c
        v, g = optax.value_and_grad_from_state(f)(p, state=s)
        u, s = tx.update(g, s, p, value=v, grad=g, value_fn=f)
        return (optax.apply_updates(p, u), s), optax.tree.norm(g)

    (p, _), gn = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps))(p0)
    return p, np.asarray(gn)


def run_gd(lr, f, p0, steps):
    def step(p, _):
        return jax.tree.map(lambda a, b: a - lr * b, p, jax.grad(f)(p)), None

    return jax.jit(lambda p: jax.lax.scan(step, p, None, length=steps)[0])(p0)


def dense_direction(f, params, delta, nu):
    """HSODM's direction from eigh of the dense augmented matrix (the paper's rule)."""
    x0, unravel = ravel_pytree(params)
    h = np.asarray(jax.hessian(lambda x: f(unravel(x)))(x0))
    g = np.asarray(jax.grad(lambda x: f(unravel(x)))(x0))
    n = g.size
    a = np.zeros((n + 1, n + 1))
    a[:n, :n], a[:n, n], a[n, :n], a[n, n] = h, g, g, -delta
    evals, evecs = np.linalg.eigh(a)
    v, t = evecs[:n, 0], evecs[n, 0]
    d = v / t if abs(t) >= nu else v
    return (-d if g @ d > 0 else d), evals[0], evals[1]


def test_direction_equals_eigh_of_dense_augmented_matrix():
    """With n + 1 Lanczos steps (the whole space) the direction is eigh's to 1e-8 relative."""
    delta, nu = 0.05, 1e-2
    tx = scale_by_hsodm(delta=delta, nu=nu, num_lanczos_steps=14)
    g = jax.grad(student_loss)(P0)
    d, state = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=student_loss))(g, tx.init(P0), P0)
    ref, lam, lam2 = dense_direction(student_loss, P0, delta, nu)
    assert lam2 - lam > 1e-3  # an isolated leftmost eigenvalue: the direction is well defined
    np.testing.assert_allclose(np.asarray(ravel_pytree(d)[0]), ref, rtol=0, atol=1e-8 * np.linalg.norm(ref))
    np.testing.assert_allclose(float(state.eigenvalue), lam, rtol=1e-10)
    assert bool(state.used_newton) and int(state.num_matvecs) == 14
    assert jax.tree.structure(d) == jax.tree.structure(P0)
    # interlacing: lambda_min(F) <= -delta
    assert lam <= -delta


def test_small_t_takes_the_negative_curvature_direction():
    """f = -x0^2/2 + x1^2 at (0, 0.3): g = (0, 0.6) is orthogonal to the leftmost eigenvector
    e0 of F (eigenvalue -1), so t = 0 < nu and d = +-e0 (v itself). The warm start (0, 0, 1)
    spans only (e1, e2): Lanczos breaks down and its restart finds e0."""
    f = lambda x: -0.5 * x[0] ** 2 + x[1] ** 2  # noqa: E731
    x = jnp.array([0.0, 0.3])
    tx = scale_by_hsodm(delta=1e-4, num_lanczos_steps=3)
    d, state = tx.update(jax.grad(f)(x), tx.init(x), x, value_fn=f)
    np.testing.assert_allclose(np.abs(np.asarray(d)), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(float(state.eigenvalue), -1.0, rtol=1e-12)
    assert not bool(state.used_newton)


def test_rosenbrock_reaches_small_gradient_where_gd_is_far_slower():
    """From (-1.2, 1): HSODM (3 Lanczos steps, zoom line search) reaches ||g|| < 1e-8 and
    (1, 1) within 40 steps; gradient descent at its largest stable fixed step (1e-3) still has
    ||g|| > 1e-2 after 2,000 steps."""
    x0 = jnp.array([-1.2, 1.0])
    x, gn = run(hsodm(num_lanczos_steps=3), rosenbrock, x0, 40)
    assert np.linalg.norm(np.asarray(jax.grad(rosenbrock)(x))) < 1e-8
    np.testing.assert_allclose(np.asarray(x), [1.0, 1.0], atol=1e-6)
    xg = run_gd(1e-3, rosenbrock, x0, 2000)
    assert np.linalg.norm(np.asarray(jax.grad(rosenbrock)(xg))) > 1e-2


def test_small_network_reaches_small_gradient_where_gd_is_far_slower():
    """Teacher-student tanh network (13 parameters, 128 samples): HSODM reaches ||g|| < 1e-8
    in 40 steps (about 700 gradient-equivalents with its HVPs); gradient descent with the
    best of the fixed steps 0.3 and 1.0 (3.0 diverges) stays above 1e-5 after 2,000 steps."""
    p, gn = run(hsodm(num_lanczos_steps=14), student_loss, P0, 40)
    assert float(optax.tree.norm(jax.grad(student_loss)(p))) < 1e-8
    best = min(float(optax.tree.norm(jax.grad(student_loss)(run_gd(lr, student_loss, P0, 2000)))) for lr in (0.3, 1.0))
    assert best > 1e-5


def test_float32_pytree_and_errors():
    p = jax.tree.map(lambda a: a.astype(jnp.float32), P0)
    x32, y32 = X.astype(jnp.float32), Y.astype(jnp.float32)
    f = lambda q: 0.5 * jnp.mean((net(q, x32) - y32) ** 2)  # noqa: E731
    tx = hsodm(num_lanczos_steps=8)
    state = tx.init(p)
    assert isinstance(state[0], ScaleByHSODMState)
    out, gn = run(tx, f, p, 5)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(out))
    assert float(f(out)) < float(f(p))
    with pytest.raises(ValueError, match=r"nu must be in \(0, 1/2\)"):
        hsodm(nu=0.7)
    with pytest.raises(ValueError, match="delta must be >= 0"):
        hsodm(delta=-1.0)
    with pytest.raises(ValueError, match="num_lanczos_steps must be an int >= 2"):
        hsodm(num_lanczos_steps=1)
    with pytest.raises(ValueError, match=r"radius must be > 0 or None, got -1.0"):
        hsodm(radius=-1.0)
    with pytest.raises(ValueError, match="needs params"):
        scale_by_hsodm().update(p, scale_by_hsodm().init(p), None, value_fn=f)
