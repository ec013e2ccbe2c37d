"""Tests of the question-level kan_jax.curvature API against dense Hessians (jax.hessian + eigh in float64).

Models: tiny tanh MLPs with a squared loss on random data, at random (untrained) parameters, so
their Hessians are indefinite. MODEL has 904 parameters, SMALL 162. Float64 is enabled in
conftest; float32 variants build float32 arrays explicitly and are compared with the float64
Hessian of the same (upcast) float32 model.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from kan_jax import curvature as cv
from kan_jax.curvature import plot_spectral_density, save_spectral_density_pages


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 5))
def make_mlp(d, h, o, num, seed, dtype):
    k = jax.random.split(jax.random.key(seed), 6)
    params = {
        "W1": jax.random.normal(k[0], (d, h), dtype) / float(np.sqrt(d)),
        "b1": 0.1 * jax.random.normal(k[1], (h,), dtype),
        "W2": jax.random.normal(k[2], (h, o), dtype) / float(np.sqrt(h)),
        "b2": 0.1 * jax.random.normal(k[3], (o,), dtype),
    }
    x = jax.random.normal(k[4], (num, d), dtype)
    y = jax.random.normal(k[5], (num, o), dtype)
    return params, (x, y)


def batch_loss(params, batch):
    """Mean over samples of half the squared error of a one-hidden-layer tanh MLP."""
    x, y = batch
    out = jnp.tanh(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))


P64, DATA64 = make_mlp(10, 60, 4, 64, seed=0, dtype=jnp.float64)       # n = 904
P32, DATA32 = make_mlp(10, 60, 4, 64, seed=1, dtype=jnp.float32)       # n = 904, float32
PS, DATAS = make_mlp(5, 20, 2, 32, seed=2, dtype=jnp.float64)          # n = 162


def loss64(p):
    return batch_loss(p, DATA64)


def loss32(p):
    return batch_loss(p, DATA32)


def loss_small(p):
    return batch_loss(p, DATAS)


def upcast(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def loss32_in_64(p):
    return batch_loss(p, upcast(DATA32))


@pytest.fixture(scope="module")
def dense64():
    h = np.asarray(cv.hessian_matrix(loss64, P64))
    evals, evecs = np.linalg.eigh(h)
    return h, evals, evecs


@pytest.fixture(scope="module")
def dense_small():
    return np.asarray(cv.hessian_matrix(loss_small, PS))


@pytest.fixture(scope="module")
def trace64():
    """100-probe Hutchinson estimate on MODEL (shared by two tests: one compilation)."""
    return cv.hessian_trace(loss64, P64, key=jax.random.key(6), max_probes=100, rel_stderr_tol=None)


@pytest.fixture(scope="module")
def dense32():
    """Float64 Hessian of the float32 model (data and params upcast)."""
    h = np.asarray(cv.hessian_matrix(loss32_in_64, upcast(P32)))
    return h, np.linalg.eigvalsh(h)


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def rand_like(key, params):
    x, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(key, x.shape, x.dtype))


# ---------------------------------------------------------------------------------------------
# Dense Hessian and HVPs
# ---------------------------------------------------------------------------------------------
def test_hessian_matrix_matches_finite_differences_of_gradient(dense_small):
    """Dense Hessian vs central differences of jax.grad (eps = 1e-5): error O(eps^2) ~ 1e-9."""
    h = dense_small
    x0, unravel = ravel_pytree(PS)
    grad = jax.jit(jax.vmap(lambda x: ravel_pytree(jax.grad(loss_small)(unravel(x)))[0]))
    eps = 1e-5
    eye = jnp.eye(x0.size)
    fd = (np.asarray(grad(x0 + eps * eye)) - np.asarray(grad(x0 - eps * eye))) / (2 * eps)
    assert np.max(np.abs(h - h.T)) <= 1e-12 * np.max(np.abs(h))
    np.testing.assert_allclose(h, fd, atol=1e-7 * np.max(np.abs(h)))
    # exact_spectrum is eigh of the same matrix
    np.testing.assert_allclose(np.asarray(cv.exact_spectrum(loss_small, PS)), np.linalg.eigvalsh(h), atol=1e-12 * np.max(np.abs(h)))


def test_hvp_equals_dense_hessian_times_vector(dense64):
    h = dense64[0]
    v = rand_like(jax.random.key(10), P64)
    hv = cv.hvp(loss64, P64, v)
    assert jax.tree.structure(hv) == jax.tree.structure(P64)
    np.testing.assert_allclose(flat(hv), h @ flat(v), rtol=0, atol=1e-12 * np.linalg.norm(h @ flat(v)))
    # hessian_operator: same product, and the gradient
    @jax.jit
    def grad_and_product(v):
        g, matvec = cv.hessian_operator(loss64, P64)
        return g, matvec(v)

    g, hv2 = grad_and_product(v)
    np.testing.assert_allclose(flat(hv2), h @ flat(v), rtol=0, atol=1e-12 * np.linalg.norm(h @ flat(v)))
    np.testing.assert_allclose(flat(g), flat(jax.grad(loss64)(P64)), rtol=1e-13, atol=1e-15)


def test_dataset_hvp_equals_full_data_hvp(trace64):
    """Sample-weighted mean of per-batch HVPs == HVP of the mean loss over all 64 samples."""
    v = rand_like(jax.random.key(11), P64)
    ref = flat(cv.hvp(loss64, P64, v))
    x, y = DATA64
    stacked = (x.reshape(4, 16, -1), y.reshape(4, 16, -1))
    got = flat(cv.dataset_hvp(batch_loss, P64, v, stacked))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * np.linalg.norm(ref))
    # explicit per-batch weights: sum_b w_b H_b v against the HVP of the weighted loss
    w = np.array([1.0, 2.0, 3.0, 4.0])
    parts = [(x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]) for i in range(4)]
    weighted = lambda p: sum(wi / w.sum() * batch_loss(p, b) for wi, b in zip(w, parts))  # noqa: E731
    ref_w = flat(cv.hvp(weighted, P64, v))
    got = flat(cv.dataset_hvp(batch_loss, P64, v, stacked, weights=w))
    np.testing.assert_allclose(got, ref_w, rtol=0, atol=1e-13 * np.linalg.norm(ref_w))
    # one batch form only: a Python list of batches is refused with a pointer to stack_batches
    with pytest.raises(TypeError, match=r"stacked pytree.*list of 4.*stack_batches"):
        cv.dataset_hvp(batch_loss, P64, v, parts)
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
        cv.dataset_hvp(batch_loss, P64, v, stacked, weights=[1.0, 2.0])
    # the same batches drive the analysis functions: trace of the data-averaged operator
    t_data = cv.hessian_trace(batch_loss, P64, key=jax.random.key(6), max_probes=100, rel_stderr_tol=None, batches=stacked)
    np.testing.assert_allclose(np.asarray(t_data.samples), np.asarray(trace64.samples), rtol=1e-11)


def test_too_large_model_is_refused():
    big = {"w": jnp.zeros((101, 100))}
    with pytest.raises(ValueError, match=r"10,100 parameters.*max_params=10,000.*Lanczos"):
        cv.hessian_matrix(lambda p: jnp.sum(p["w"] ** 2), big)
    with pytest.raises(ValueError, match=r"162 parameters.*max_params=100"):
        cv.exact_spectrum(loss_small, PS, max_params=100)


# ---------------------------------------------------------------------------------------------
# Lanczos
# ---------------------------------------------------------------------------------------------
def test_top5_eigenpairs_match_eigh_float64(dense64):
    """Top-5 eigenvalues to 1e-8 relative, eigenvectors aligned, residuals measured correctly."""
    h, evals, evecs = dense64
    res = cv.top_eigenpairs(loss64, P64, k=5, num_steps=60, key=jax.random.key(1))
    top = evals[::-1][:5]
    got = np.asarray(res.eigenvalues)
    np.testing.assert_allclose(got, top, rtol=1e-8)
    vecs = np.stack([flat(jax.tree.map(lambda a, i=i: a[i], res.eigenvectors)) for i in range(5)])
    assert vecs.shape == (5, h.shape[0])
    overlaps = np.abs(np.sum(vecs * evecs[:, ::-1][:, :5].T, axis=1))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-6)
    # reported residuals are ||H v - lambda v|| (checked against the dense matrix)
    dense_res = np.linalg.norm(vecs @ h - got[:, None] * vecs, axis=1)
    np.testing.assert_allclose(np.asarray(res.residual_norms), dense_res, atol=1e-12 * np.abs(top[0]))
    assert np.all(dense_res < 1e-6 * np.abs(top[0]))


def test_min_eigenpair_80_steps(dense64):
    """Minimum eigenvalue to 1e-3 relative at 80 Lanczos steps (observed: ~1e-15)."""
    h, evals, _ = dense64
    res = cv.min_eigenpair(loss64, P64, num_steps=80, key=jax.random.key(2))
    assert evals[0] < 0
    np.testing.assert_allclose(float(res.eigenvalue), evals[0], rtol=1e-3)
    v = flat(res.eigenvector)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-12)
    np.testing.assert_allclose(float(res.residual_norm), np.linalg.norm(h @ v - float(res.eigenvalue) * v), rtol=1e-6, atol=1e-13)


def test_augmented_min_eigenpair_matches_dense_augmented_matrix(dense64):
    """Minimum eigenvalue of [[H, g], [g^T, -delta]] to 1e-8 relative vs eigh of the dense matrix."""
    h = dense64[0]
    delta = 0.1
    g = flat(jax.grad(loss64)(P64))
    n = h.shape[0]
    a = np.zeros((n + 1, n + 1))
    a[:n, :n], a[:n, n], a[n, :n], a[n, n] = h, g, g, -delta
    evals, evecs = np.linalg.eigh(a)
    # operator form: one HVP per product, matches the dense matrix
    v = rand_like(jax.random.key(12), P64)
    t = 0.7
    ov, ot = jax.jit(lambda v, t: cv.augmented_operator(loss64, P64, delta)((v, t)))(v, t)
    ref = a @ np.append(flat(v), t)
    np.testing.assert_allclose(np.append(flat(ov), float(ot)), ref, atol=1e-12 * np.linalg.norm(ref))

    res = cv.augmented_min_eigenpair(loss64, P64, delta, num_steps=100, key=jax.random.key(3))
    np.testing.assert_allclose(float(res.eigenvalue), evals[0], rtol=1e-8)
    z = np.append(flat(res.vector), float(res.scalar))
    np.testing.assert_allclose(abs(z @ evecs[:, 0]), 1.0, atol=1e-8)
    assert float(res.residual_norm) < 1e-6 * np.abs(evals).max()
    # interlacing: below both the Hessian's minimum and -delta
    assert evals[0] <= min(np.linalg.eigvalsh(h)[0], -delta)


def test_lanczos_full_run_recovers_whole_spectrum(dense_small):
    """Property: Lanczos with m = n steps and full reorthogonalisation == exact eigh (1e-10)."""
    h = jnp.asarray(dense_small)
    evals = np.linalg.eigvalsh(dense_small)
    x0 = ravel_pytree(PS)[0]
    res = cv.lanczos(x0.size)(lambda v: h @ v, jax.random.normal(jax.random.key(4), x0.shape))
    q = np.asarray(res.basis)
    np.testing.assert_allclose(q @ q.T, np.eye(x0.size), atol=1e-12)
    theta = np.asarray(cv.tridiagonal_eigh(res.alphas, res.betas)[0])
    np.testing.assert_allclose(theta, evals, atol=1e-10 * np.abs(evals).max())


def count_ghosts(res, evals, tol):
    """Number of isolated exact eigenvalues matched by more than one converged Ritz value."""
    theta, s = cv.tridiagonal_eigh(res.alphas, res.betas)
    theta = np.asarray(theta, np.float64)
    est = np.abs(float(res.residual_norm) * np.asarray(s, np.float64)[-1])  # ||H y - theta y||
    converged = theta[est < tol]
    gaps = np.minimum(np.diff(evals, prepend=-np.inf), np.diff(evals, append=np.inf))
    isolated = evals[gaps > 10 * tol]
    counts = np.array([(np.abs(converged - e) < tol).sum() for e in isolated])
    return int((counts > 1).sum()), len(converged)


@pytest.mark.parametrize("dtype, rel_tol", [(jnp.float64, 1e-8), (jnp.float32, 1e-4)])
def test_no_ghost_eigenvalues_near_n_steps(dense_small, dtype, rel_tol):
    """Run n - 10 Lanczos steps (n = 162) on SMALL's Hessian (rounded to dtype): with full
    reorthogonalisation no converged Ritz value is duplicated; the plain three-term recurrence
    (positive control for the detector) does produce ghosts."""
    h = jnp.asarray(dense_small, dtype)
    evals = np.linalg.eigvalsh(np.asarray(h, np.float64))
    tol = rel_tol * np.abs(evals).max()
    n = evals.size
    v0 = jax.random.normal(jax.random.key(5), (n,), dtype)
    good = cv.lanczos(n - 10)(lambda v: h @ v, v0)
    assert good.alphas.dtype == dtype and good.basis.dtype == dtype
    ghosts, converged = count_ghosts(good, evals, tol)
    assert ghosts == 0 and converged > n // 2
    plain = cv.lanczos(n - 10, reorthogonalize=False)(lambda v: h @ v, v0)
    assert count_ghosts(plain, evals, tol)[0] > 0


def test_lanczos_breakdown_gives_no_nan_and_full_multiplicities():
    """A = diag with 3 distinct values, each 4 times: the Krylov space of a generic vector has
    dimension 3, so beta_2 breaks down; restarts recover every eigenvalue with multiplicity."""
    d = jnp.repeat(jnp.array([1.0, 2.0, 5.0]), 4)
    res = cv.lanczos(12)(lambda v: d * v, jnp.ones(12) + 0.1 * jnp.arange(12.0))
    assert np.all(np.isfinite(np.asarray(res.alphas))) and np.all(np.isfinite(np.asarray(res.betas)))
    assert float(res.betas[2]) == 0.0
    theta = np.asarray(cv.tridiagonal_eigh(res.alphas, res.betas)[0])
    np.testing.assert_allclose(theta, np.sort(np.asarray(d)), atol=1e-12)
    q = np.asarray(res.basis)
    np.testing.assert_allclose(q @ q.T, np.eye(12), atol=1e-12)
    # zero start vector and zero operator: still finite
    z = cv.lanczos(5)(lambda v: 0.0 * v, jnp.zeros(5))
    assert np.all(np.isfinite(np.asarray(z.alphas))) and np.all(np.asarray(z.betas) == 0)


# ---------------------------------------------------------------------------------------------
# Trace and density
# ---------------------------------------------------------------------------------------------
def test_hutchinson_trace_within_three_standard_errors(dense64, trace64):
    h, evals, _ = dense64
    est = trace64
    assert int(est.num_probes) == 100
    assert abs(float(est.mean) - np.trace(h)) <= 3 * float(est.stderr)
    # the reported standard error agrees with the exact Rademacher variance 2 sum_{i!=j} H_ij^2
    exact_se = np.sqrt(2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)) / 100)
    assert 0.7 < float(est.stderr) / exact_se < 1.3
    samples = np.asarray(est.samples)
    np.testing.assert_allclose(float(est.mean), samples.mean(), rtol=1e-12)
    # stopping rule: a loose relative target stops early, with the target met
    early = cv.hessian_trace(loss64, P64, key=jax.random.key(6), max_probes=100, rel_stderr_tol=0.05)
    n_used = int(early.num_probes)
    assert 10 <= n_used < 100 and float(early.stderr) <= 0.05 * abs(float(early.mean))
    assert np.all(np.isnan(np.asarray(early.samples)[n_used:]))


def test_slq_density_integrates_to_one_and_matches_moments(dense64):
    """SLQ: density integrates to 1 (1e-6); first two moments match tr(H)/n and ||H||_F^2/n
    within 4 standard deviations of the Rademacher estimator over the runs."""
    h, evals, _ = dense64
    n, runs = h.shape[0], 20
    sd = cv.spectral_density(loss64, P64, num_runs=runs, num_steps=60, key=jax.random.key(7))
    assert sd.nodes.shape == (runs, 60) and sd.weights.shape == (runs, 60)
    np.testing.assert_allclose(np.asarray(sd.weights).sum(axis=1), 1.0, atol=1e-12)
    grid, dens = np.asarray(sd.grid), np.asarray(sd.density)
    assert grid[0] < np.asarray(sd.nodes).min() and grid[-1] > np.asarray(sd.nodes).max()
    assert np.all(dens >= 0)
    np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, atol=1e-6)

    m1 = np.mean(np.sum(np.asarray(sd.weights) * np.asarray(sd.nodes), axis=1))
    m2 = np.mean(np.sum(np.asarray(sd.weights) * np.asarray(sd.nodes) ** 2, axis=1))
    h2 = h @ h
    sd1 = np.sqrt(2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)) / n**2 / runs)
    sd2 = np.sqrt(2 * (np.sum(h2**2) - np.sum(np.diag(h2) ** 2)) / n**2 / runs)
    assert abs(m1 - np.trace(h) / n) <= 4 * sd1
    assert abs(m2 - np.sum(h**2) / n) <= 4 * sd2
    # the smoothed density has the same mean as the quadrature rules (the kernel is symmetric)
    np.testing.assert_allclose(np.trapezoid(dens * grid, grid), m1, atol=1e-6 * np.abs(evals).max())


def test_gauss_quadrature_reproduces_quadratic_forms(dense_small):
    """Property: the m-step Lanczos rule integrates polynomials of degree <= 2m-1 exactly:
    sum tau theta^p == z^T H^p z / z^T z for p = 1, 2, 3 (to 1e-10)."""
    h = dense_small
    z = np.asarray(jax.random.rademacher(jax.random.key(8), (h.shape[0],), jnp.float64))
    res = cv.lanczos(10)(lambda v: jnp.asarray(h) @ v, jnp.asarray(z))
    theta, s = (np.asarray(a) for a in cv.tridiagonal_eigh(res.alphas, res.betas))
    tau = s[0] ** 2
    for p in (1, 2, 3):
        ref = z @ np.linalg.matrix_power(h, p) @ z / (z @ z)
        np.testing.assert_allclose(np.sum(tau * theta**p), ref, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Float32
# ---------------------------------------------------------------------------------------------
def test_float32_variants(dense32):
    """Float32 model vs the float64 Hessian of the same model. Stated tolerances: HVP 1e-5 of
    ||Hv||; top-5 eigenvalues 1e-5 relative; minimum eigenvalue 1e-3 relative at 80 steps;
    augmented minimum 1e-5 relative; Hutchinson within 3 standard errors; density integral 1e-5."""
    h, evals = dense32
    v = rand_like(jax.random.key(13), P32)
    hv = cv.hvp(loss32, P32, v)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(hv))
    ref = h @ flat(v).astype(np.float64)
    np.testing.assert_allclose(flat(hv), ref, atol=1e-5 * np.linalg.norm(ref))

    top = cv.top_eigenpairs(loss32, P32, k=5, num_steps=60)
    assert top.eigenvalues.dtype == jnp.float32
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(top.eigenvectors))
    np.testing.assert_allclose(np.asarray(top.eigenvalues), evals[::-1][:5], rtol=1e-5)

    low = cv.min_eigenpair(loss32, P32, num_steps=80)
    np.testing.assert_allclose(float(low.eigenvalue), evals[0], rtol=1e-3)

    delta = 0.1
    g = flat(jax.grad(loss32_in_64)(upcast(P32)))
    n = h.shape[0]
    a = np.zeros((n + 1, n + 1))
    a[:n, :n], a[:n, n], a[n, :n], a[n, n] = h, g, g, -delta
    aug = cv.augmented_min_eigenpair(loss32, P32, delta, num_steps=100)
    np.testing.assert_allclose(float(aug.eigenvalue), np.linalg.eigvalsh(a)[0], rtol=1e-5)

    tr = cv.hessian_trace(loss32, P32, max_probes=50, rel_stderr_tol=None)
    assert abs(float(tr.mean) - np.trace(h)) <= 3 * float(tr.stderr)

    sd = cv.spectral_density(loss32, P32, num_runs=4, num_steps=40)
    assert sd.density.dtype == jnp.float32
    np.testing.assert_allclose(np.trapezoid(np.asarray(sd.density, np.float64), np.asarray(sd.grid, np.float64)), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------
def test_esd_plot_writes_png_and_pdf_pages(tmp_path):
    nodes = jnp.array([[-1.0, 0.0, 0.5, 4.0], [-0.5, 0.1, 1.0, 3.5]])
    weights = jnp.array([[0.1, 0.6, 0.2, 0.1], [0.2, 0.5, 0.2, 0.1]])
    grid, dens, _ = cv.gaussian_density(nodes, weights, num_points=500)
    np.testing.assert_allclose(np.trapezoid(np.asarray(dens), np.asarray(grid)), 1.0, atol=1e-6)
    png = tmp_path / "esd.png"
    plot_spectral_density((grid, dens), path=png, title="test")
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = save_spectral_density_pages(tmp_path / "esd.pdf", [(grid, dens), (grid, 2 * dens)], titles=["a", "b"])
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") + data.count(b"/Type/Page\n") >= 1
