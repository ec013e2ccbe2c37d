r"""Lanczos on any symmetric operator: tridiagonalisation, Ritz pairs, extreme eigenpairs.

Algorithms are built once from their sizes and applied to any ``matvec(v, *args)``, the
``args`` (parameters, data) being traced arguments, so one compiled program serves new
parameters and new data::

    run = lanczos(30)                    # sizes are static
    result = run(matvec, v0, params, batch)

Vectors are pytrees (a flat array is one); the basis and eigenvectors come back with a leading
axis of their count.

Without reorthogonalisation, rounding makes converged eigenvalues come back as "ghost" copies
(within a few dozen steps in float32). Here step ``j`` applies the three-term recurrence, then
one classical Gram-Schmidt pass against the filled part of the basis only, ``block_size`` rows
at a time, and a second pass only if the first removed more than ``1 - 1/sqrt 2`` of the norm
(the DGKS criterion, "twice is enough"). A step costs one matvec plus ``2 n (j + B)`` flops
(``4 n (j + B)`` when the second pass fires) instead of ``4 n m`` for two passes over the whole
``m x n`` basis (``reorthogonalize="dense"``, kept for comparison:
``python -m benchmarks.lanczos_reorth``). When ``beta_j <= 10 eps ||A q_j||`` the Krylov space is
invariant: ``beta_j`` is set to 0 and the iteration restarts from a pseudo-random unit vector
orthogonal to the basis, so ``T`` becomes block diagonal and no NaN appears.

References:
  C. Lanczos, J. Res. Nat. Bur. Standards 45 (1950) 255-282. C. C. Paige, "The computation of
  eigenvalues and eigenvectors of very large sparse matrices", PhD thesis, Univ. of London
  (1971). J. W. Daniel, W. B. Gragg, L. Kaufman, G. W. Stewart, "Reorthogonalization and stable
  algorithms for updating the Gram-Schmidt QR factorization", Math. Comp. 30 (1976) 772-795.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from kan_jax.curvature.operators import flat

PyTree = Any
Array = jax.Array

__all__ = ["DEFAULT_BLOCK_SIZE", "Eigenpairs", "LanczosResult", "extreme_eigenpairs", "lanczos", "tridiagonal_eigh"]

#: Rows of the Lanczos basis orthogonalised against per block (measured by
#: ``python -m benchmarks.lanczos_reorth --block-size B``).
DEFAULT_BLOCK_SIZE = 16

_BREAKDOWN_EPS = 10.0
_DGKS = 1.0 / math.sqrt(2.0)
_MODES = {True: "blocked", False: "none", "blocked": "blocked", "dense": "dense", "none": "none"}


class LanczosResult(NamedTuple):
    """Output of :func:`lanczos`.

    Attributes:
        alphas: ``(m,)`` diagonal of ``T = Q^T A Q``.
        betas: ``(m - 1,)`` off-diagonal of ``T``; a zero marks a breakdown and restart.
        basis: The orthonormal Lanczos vectors, shaped like ``v0`` with a leading ``m`` axis.
        residual_norm: ``beta_m``: the Ritz pair ``(theta_i, Q^T s_i)`` has residual
            ``beta_m |s_{m-1,i}|``.
    """

    alphas: Array
    betas: Array
    basis: PyTree
    residual_norm: Array


class Eigenpairs(NamedTuple):
    """Extreme eigenpairs.

    Attributes:
        eigenvalues: ``(k,)`` Ritz values, most extreme first.
        eigenvectors: Unit Ritz vectors shaped like the start vector, leading axis ``k``.
        residual_norms: ``(k,)`` values of ``||A v_i - lambda_i v_i||``, one more matvec each.
    """

    eigenvalues: Array
    eigenvectors: PyTree
    residual_norms: Array


def _mode(reorthogonalize: bool | str) -> str:
    try:
        return _MODES[reorthogonalize]
    except (KeyError, TypeError):
        raise ValueError(f"reorthogonalize must be True, False, 'blocked', 'dense' or 'none', got {reorthogonalize!r}") from None


def _random_unit(j: Array, basis: Array, n: int, dtype: Any) -> Array:
    """Restart vector from a murmur3-style hash of (index, step), orthogonalised twice to ``basis``."""
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


def _tridiagonalize(matvec: Callable[[Array], Array], v0: Array, num_steps: int, mode: str, block_size: int) -> LanczosResult:
    """Lanczos on flat vectors; ``basis`` of shape ``(m, n)``."""
    n = v0.shape[0]
    m = min(num_steps, n)
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    bs = max(1, min(block_size, m))
    nb = -(-m // bs)
    basis = jnp.zeros((nb * bs, n), dtype)
    nv0 = jnp.linalg.norm(v0)
    q0 = jax.lax.cond(nv0 > 0, lambda: v0 / jnp.where(nv0 > 0, nv0, 1), lambda: _random_unit(n, basis, n, dtype))
    basis = basis.at[0].set(q0)

    def body(j, carry):
        basis, alphas, betas = carry
        q = basis[j]
        w = matvec(q).astype(dtype)
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


def lanczos(
    num_steps: int,
    *,
    reorthogonalize: bool | str = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Callable[..., LanczosResult]:
    r"""Lanczos tridiagonalisation of a symmetric operator, built from its number of steps.

    .. math::
        w_j = A q_j, \quad \alpha_j = q_j^\top w_j, \quad
        r_j = (I - Q Q^\top)(w_j - \alpha_j q_j - \beta_{j-1} q_{j-1}), \quad
        \beta_j = \|r_j\|, \quad q_{j+1} = r_j / \beta_j .

    Args:
        num_steps: Steps ``m`` (= matvecs), capped at the dimension.
        reorthogonalize: ``True`` / ``"blocked"``: blocked, selective full reorthogonalisation
            (module docstring); ``"dense"``: two passes over the whole basis every step;
            ``False`` / ``"none"``: the plain three-term recurrence (shows the ghosts).
        block_size: Rows per block of the blocked pass.

    Returns:
        A pure ``run(matvec, v0, *args) -> LanczosResult``: ``matvec(v, *args)`` maps
        ``v0``-shaped pytrees to the same, ``v0`` is the start vector (normalised; a zero vector
        is replaced by a pseudo-random one).

    Raises:
        ValueError: If ``num_steps < 1`` or ``reorthogonalize`` is unknown.

    Example:
        >>> a = jnp.diag(jnp.arange(1.0, 101.0))
        >>> res = lanczos(30)(lambda v, m: m @ v, jnp.ones(100), a)
        >>> round(float(tridiagonal_eigh(res.alphas, res.betas)[0][-1]), 1)
        100.0
    """
    mode = _mode(reorthogonalize)
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    num_steps, block_size = int(num_steps), int(block_size)

    def run(matvec: Callable[..., PyTree], v0: PyTree, *args: Any) -> LanczosResult:
        fmv, x0, unravel = flat(matvec, v0)
        res = _tridiagonalize(lambda x: fmv(x, *args), x0, num_steps, mode, block_size)
        return res._replace(basis=jax.vmap(unravel)(res.basis))

    return run


def tridiagonal_eigh(alphas: Array, betas: Array) -> tuple[Array, Array]:
    """Eigen-decomposition of the symmetric tridiagonal ``T = tridiag(betas, alphas, betas)``.

    :func:`jax.numpy.linalg.eigh` of the dense ``(m, m)`` matrix (jax's ``eigh_tridiagonal``
    returns no vectors).

    Returns:
        ``(eigenvalues, eigenvectors)``: ascending Ritz values ``(m,)`` and ``(m, m)`` with
        column ``s_i``; ``s_i[0]**2`` is the Gauss quadrature weight and ``|s_i[-1]| beta_m`` the
        Ritz residual.
    """
    t = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)
    return jnp.linalg.eigh(t)


def extreme_eigenpairs(
    num_steps: int,
    k: int = 1,
    *,
    largest: bool = True,
    reorthogonalize: bool | str = True,
) -> Callable[..., Eigenpairs]:
    """The ``k`` extreme Ritz pairs after ``num_steps`` Lanczos steps, with measured residuals.

    Takes the ``k`` largest (or smallest) Ritz values ``theta_i`` and unit vectors
    ``y_i = Q^T s_i`` and measures ``||A y_i - theta_i y_i||`` with ``k`` more matvecs. Extreme
    eigenvalues converge like ``exp(-2 m sqrt(gap))`` (Kaniel-Paige).

    Args:
        num_steps: Lanczos steps.
        k: Number of eigenpairs, ``1 <= k <= min(num_steps, n)``.
        largest: The algebraically largest (``True``) or smallest pairs.
        reorthogonalize: As in :func:`lanczos`.

    Returns:
        A pure ``run(matvec, v0, *args) -> Eigenpairs``, most extreme first.
    """
    tridiag = lanczos(num_steps, reorthogonalize=reorthogonalize)
    if int(k) < 1:
        raise ValueError(f"k={k} eigenpairs requested (need 1 <= k <= steps)")

    def run(matvec: Callable[..., PyTree], v0: PyTree, *args: Any) -> Eigenpairs:
        fmv, x0, unravel = flat(matvec, v0)
        res = tridiag(fmv, x0, *args)
        m = res.alphas.shape[0]
        if not k <= m:
            raise ValueError(f"k={k} eigenpairs requested from {m} Lanczos steps (need 1 <= k <= steps)")
        evals, s = tridiagonal_eigh(res.alphas, res.betas)
        evals, s = (evals[::-1][:k], s[:, ::-1][:, :k]) if largest else (evals[:k], s[:, :k])
        vecs = s.T @ res.basis
        vecs = vecs / jnp.linalg.norm(vecs, axis=1, keepdims=True)
        av = jax.lax.map(lambda x: fmv(x, *args), vecs)
        resid = jnp.linalg.norm(av - evals[:, None] * vecs, axis=1)
        return Eigenpairs(evals, jax.vmap(unravel)(vecs), resid)

    return run
