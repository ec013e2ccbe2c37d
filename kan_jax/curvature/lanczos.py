r"""Lanczos on any symmetric operator: tridiagonalisation, Ritz pairs, extreme eigenpairs.

Pure functions of ``(matvec, v0, *args)``: ``matvec(v, *args)`` is called with the extra
arguments as traced values, so one compiled program serves new parameters and new data
(see :mod:`kan_jax.curvature.operators`). Sizes (number of steps, block size) are static.

Reorthogonalisation
-------------------
Without it, rounding makes the basis lose orthogonality once a Ritz value converges and
converged eigenvalues come back as "ghost" copies [Paige1971]_ (within a few dozen steps in
float32). The default here keeps the basis orthogonal to working precision at a bounded cost:

* step ``j`` first applies the three-term recurrence ``w = A q_j - alpha_j q_j - beta_{j-1}
  q_{j-1}`` (``O(n)``), then one classical Gram-Schmidt pass against the *filled* part of the
  basis only, block by block (``B = block_size`` rows at a time, so the work is
  ``2 n B ceil((j+1)/B)`` flops instead of ``2 n m`` for the whole preallocated basis);
* a second pass runs only if the first removed more than ``1 - 1/sqrt 2`` of the norm (the
  DGKS criterion [Daniel1976]_: "twice is enough").

So step ``j`` costs one matvec plus ``2 n (j + B)`` flops (``4 n (j + B)`` when the second pass
fires), and the whole run about ``n m^2`` instead of the ``4 n m^2`` of two full passes over
the ``m x n`` basis (``reorthogonalize="dense"``, kept for comparison;
``benchmarks/RESULTS.md`` has the timings).

Breakdown: when ``beta_j <= 10 eps ||A q_j||`` the Krylov space is invariant; ``beta_j`` is
set to exactly 0 and the iteration restarts from a pseudo-random unit vector orthogonal to
the basis, so ``T`` becomes block diagonal and no NaN appears.

References
----------
.. [Lanczos1950] C. Lanczos, J. Res. Nat. Bur. Standards 45 (1950) 255-282.
.. [Paige1971] C. C. Paige, "The computation of eigenvalues and eigenvectors of very large
   sparse matrices", PhD thesis, Univ. of London (1971).
.. [Daniel1976] J. W. Daniel, W. B. Gragg, L. Kaufman, G. W. Stewart, "Reorthogonalization and
   stable algorithms for updating the Gram-Schmidt QR factorization", Math. Comp. 30 (1976)
   772-795.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

PyTree = Any
Array = jax.Array

__all__ = [
    "LanczosResult",
    "Eigenpairs",
    "lanczos_flat",
    "lanczos_tree",
    "tridiagonal_eigh",
    "eigenpairs",
    "DEFAULT_BLOCK_SIZE",
]

#: Rows of the Lanczos basis orthogonalised against per block.
DEFAULT_BLOCK_SIZE = 16

_BREAKDOWN_EPS = 10.0
_DGKS = 1.0 / math.sqrt(2.0)


class LanczosResult(NamedTuple):
    """Output of Lanczos.

    Attributes
    ----------
    alphas : Array, shape ``(m,)``
        Diagonal of ``T = Q^T A Q``.
    betas : Array, shape ``(m - 1,)``
        Off-diagonal of ``T``; a zero marks a breakdown and restart.
    basis : PyTree
        The orthonormal Lanczos vectors, leaves with a leading axis of length ``m`` (an
        ``(m, n)`` array for a flat start vector).
    residual_norm : Array, scalar
        ``beta_m``: the Ritz pair ``(theta_i, Q^T s_i)`` has residual ``beta_m |s_{m-1,i}|``.
    """

    alphas: Array
    betas: Array
    basis: PyTree
    residual_norm: Array


class Eigenpairs(NamedTuple):
    """Extreme eigenpairs.

    Attributes
    ----------
    eigenvalues : Array, shape ``(k,)``
        Ritz values, most extreme first (largest first for the top end, smallest first for
        the bottom end).
    eigenvectors : PyTree
        Unit Ritz vectors, leaves with a leading axis of length ``k``.
    residual_norms : Array, shape ``(k,)``
        ``||A v_i - lambda_i v_i||`` measured with one more matvec per pair.
    """

    eigenvalues: Array
    eigenvectors: PyTree
    residual_norms: Array


def _random_unit(j: Array, basis: Array, n: int, dtype: Any) -> Array:
    """Restart vector: a murmur3-style hash of (index, step) (no PRNG: cheap to compile),
    orthogonalised twice against ``basis`` and normalised."""
    h = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1) + (jnp.asarray(j).astype(jnp.uint32) + jnp.uint32(1)) * jnp.uint32(0x85EBCA77)
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    r = (h >> 8).astype(dtype) / (1 << 24) - 0.5
    for _ in range(2):
        r = r - basis.T @ (basis @ r)
    nr = jnp.linalg.norm(r)
    return r / jnp.where(nr > 0, nr, 1)


def _blocked_pass(w: Array, blocks: Array, num_blocks: Array) -> Array:
    """One block classical Gram-Schmidt pass of ``w`` against blocks ``0 .. num_blocks - 1``."""

    def body(k, w):
        qk = jax.lax.dynamic_index_in_dim(blocks, k, keepdims=False)
        return w - qk.T @ (qk @ w)

    return jax.lax.fori_loop(0, num_blocks, body, w)


def lanczos_flat(
    matvec: Callable[..., Array],
    v0: Array,
    num_steps: int,
    *args: Any,
    reorthogonalize: bool | str = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> LanczosResult:
    r"""Lanczos tridiagonalisation on flat vectors (pure; call it inside ``jit``).

    .. math::
        w_j = A q_j, \quad \alpha_j = q_j^\top w_j, \quad
        r_j = (I - Q Q^\top)(w_j - \alpha_j q_j - \beta_{j-1} q_{j-1}), \quad
        \beta_j = \|r_j\|, \quad q_{j+1} = r_j / \beta_j .

    Parameters
    ----------
    matvec : callable
        ``matvec(x (n,), *args) -> (n,)`` of a symmetric operator.
    v0 : Array, shape ``(n,)``
        Start vector (normalised here; a zero vector is replaced by a pseudo-random one).
    num_steps : int
        Steps ``m`` (= matvecs), capped at ``n``.
    *args
        Passed to ``matvec`` (traced).
    reorthogonalize : bool or str
        ``True`` / ``"blocked"``: blocked, selective full reorthogonalisation (module
        docstring); ``"dense"``: two Gram-Schmidt passes over the whole ``m x n`` basis every
        step (the former method); ``False`` / ``"none"``: plain three-term recurrence (shows
        the ghosts).
    block_size : int
        Rows per block of the blocked pass.

    Returns
    -------
    LanczosResult
        With ``basis`` of shape ``(m, n)``.
    """
    mode = {True: "blocked", False: "none"}.get(reorthogonalize, reorthogonalize)
    if mode not in ("blocked", "dense", "none"):
        raise ValueError(f"reorthogonalize must be True, False, 'blocked', 'dense' or 'none', got {reorthogonalize!r}")
    n = v0.shape[0]
    m = min(int(num_steps), n)
    if m < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    bs = max(1, min(int(block_size), m))
    nb = -(-m // bs)
    basis = jnp.zeros((nb * bs, n), dtype)

    nv0 = jnp.linalg.norm(v0)
    q0 = jnp.where(nv0 > 0, v0 / jnp.where(nv0 > 0, nv0, 1), _random_unit(n, basis, n, dtype))
    basis = basis.at[0].set(q0)

    def body(j, carry):
        basis, alphas, betas = carry
        q = basis[j]
        w = matvec(q, *args).astype(dtype)
        alpha = jnp.vdot(q, w).real.astype(dtype)
        w_norm = jnp.linalg.norm(w)
        jm1 = jnp.maximum(j - 1, 0)
        beta_prev = jnp.where(j > 0, betas[jm1], 0)
        if mode == "dense":
            for _ in range(2):
                w = w - basis.T @ (basis @ w)
        else:
            w = w - alpha * q - beta_prev * basis[jm1]
            if mode == "blocked":
                blocks = basis.reshape(nb, bs, n)
                used = j // bs + 1
                before = jnp.linalg.norm(w)
                w = _blocked_pass(w, blocks, used)
                w = jax.lax.cond(jnp.linalg.norm(w) < _DGKS * before, lambda w: _blocked_pass(w, blocks, used), lambda w: w, w)
        beta = jnp.linalg.norm(w)
        broke = beta <= _BREAKDOWN_EPS * eps * w_norm
        q_next = jax.lax.cond(broke, lambda: _random_unit(j, basis, n, dtype), lambda: w / jnp.where(beta > 0, beta, 1))
        beta = jnp.where(broke, jnp.zeros_like(beta), beta)
        basis = basis.at[j + 1].set(q_next, mode="drop")
        return basis, alphas.at[j].set(alpha), betas.at[j].set(beta)

    init = (basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype))
    basis, alphas, betas = jax.lax.fori_loop(0, m, body, init)
    return LanczosResult(alphas, betas[:-1], basis[:m], betas[-1])


def lanczos_tree(
    matvec: Callable[..., PyTree],
    v0: PyTree,
    num_steps: int,
    *args: Any,
    reorthogonalize: bool | str = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> LanczosResult:
    """:func:`lanczos_flat` on pytrees: ``matvec(v, *args)`` maps ``v0``-shaped pytrees to the same.

    Returns a :class:`LanczosResult` whose ``basis`` is ``v0``-shaped with a leading ``m`` axis.
    """
    x0, unravel = ravel_pytree(v0)

    def fmv(x, *a):
        return ravel_pytree(matvec(unravel(x), *a))[0].astype(x0.dtype)

    res = lanczos_flat(fmv, x0, num_steps, *args, reorthogonalize=reorthogonalize, block_size=block_size)
    return res._replace(basis=jax.vmap(unravel)(res.basis))


def tridiagonal_eigh(alphas: Array, betas: Array) -> tuple[Array, Array]:
    """Eigen-decomposition of the symmetric tridiagonal ``T = tridiag(betas, alphas, betas)``.

    :func:`jax.numpy.linalg.eigh` of the dense ``(m, m)`` matrix (jax's ``eigh_tridiagonal``
    returns no vectors).

    Returns
    -------
    eigenvalues : Array, shape ``(m,)``
        Ascending Ritz values.
    eigenvectors : Array, shape ``(m, m)``
        Column ``i`` is ``s_i``; ``s_i[0]**2`` is the Gauss quadrature weight and
        ``|s_i[-1]| beta_m`` the Ritz residual.
    """
    t = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)
    return jnp.linalg.eigh(t)


def eigenpairs(
    matvec: Callable[..., Array],
    v0: Array,
    num_steps: int,
    k: int,
    *args: Any,
    largest: bool = True,
    reorthogonalize: bool | str = True,
) -> tuple[Array, Array, Array]:
    """``k`` extreme Ritz pairs of a flat operator with measured residuals (pure).

    Runs :func:`lanczos_flat`, takes the ``k`` largest (or smallest) Ritz values ``theta_i`` and
    vectors ``y_i = Q^T s_i`` (normalised), and measures ``||A y_i - theta_i y_i||`` with ``k``
    more matvecs. Cost: ``num_steps + k`` matvecs.

    Returns
    -------
    eigenvalues : Array, shape ``(k,)``
        Most extreme first.
    eigenvectors : Array, shape ``(k, n)``
    residual_norms : Array, shape ``(k,)``
    """
    res = lanczos_flat(matvec, v0, num_steps, *args, reorthogonalize=reorthogonalize)
    m = res.alphas.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k={k} eigenpairs requested from {m} Lanczos steps (need 1 <= k <= steps)")
    evals, s = tridiagonal_eigh(res.alphas, res.betas)
    if largest:
        evals, s = evals[::-1][:k], s[:, ::-1][:, :k]
    else:
        evals, s = evals[:k], s[:, :k]
    vecs = s.T @ res.basis
    vecs = vecs / jnp.linalg.norm(vecs, axis=1, keepdims=True)
    av = jax.lax.map(lambda x: matvec(x, *args), vecs)
    resid = jnp.linalg.norm(av - evals[:, None] * vecs, axis=1)
    return evals, vecs, resid
