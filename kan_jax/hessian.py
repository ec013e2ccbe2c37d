r"""Hessian analysis: Hessian-vector products, dense Hessians, Lanczos, spectra and traces.

Every analysis function takes a scalar loss and a parameter pytree (any Flax model's ``params``)
and returns pytrees wherever a vector in parameter space is meant. Internally the parameters are
raveled to one flat vector with :func:`jax.flatten_util.ravel_pytree`; the flat order is the one
that function defines (leaves in pytree order, each leaf in C order).

Two forms of loss are accepted:

* ``loss_fn(params) -> scalar`` (``batches=None``): the data are closed over.
* ``loss_fn(params, batch) -> scalar`` with ``batches=`` given: the analysed loss is the
  sample-weighted mean over the batches,

  .. math:: L(\theta) = \sum_b w_b\, \ell(\theta, B_b), \qquad \sum_b w_b = 1,

  and every Hessian-vector product runs over the *same* batches, so that Lanczos sees one fixed
  symmetric operator (a full-dataset spectrum). ``batches`` is either a *stacked* pytree whose
  leaves have a leading batch-index axis (``(num_batches, batch_size, ...)``, scanned with
  :func:`jax.lax.scan`; weights default to equal) or a Python ``list`` of batch pytrees of
  possibly different sizes (unrolled; weights default to each batch's sample count, the leading
  dimension of its first leaf). ``weights`` overrides either default and is normalised to sum 1.
  ``ℓ`` is assumed to be a mean over the batch's samples.

All loops are ``lax`` loops inside one :func:`jax.jit`-compiled function per call signature
(``loss_fn`` and sizes are static, so reuse the same ``loss_fn`` object to avoid re-tracing;
pass data through ``batches`` rather than closures for large datasets). Analysis runs under
``jax.default_matmul_precision("highest")`` by default: TF32 matrix products on GPUs otherwise
limit eigenvalue accuracy to about 1e-4 relative.

References
----------
.. [Lanczos1950] C. Lanczos, "An iteration method for the solution of the eigenvalue problem of
   linear differential and integral operators", J. Res. Nat. Bur. Standards 45 (1950) 255-282.
.. [Hutchinson1989] M. F. Hutchinson, "A stochastic estimator of the trace of the influence
   matrix for Laplacian smoothing splines", Comm. Statist. Simulation Comput. 18 (1989) 1059-1076.
.. [Ubaru2017] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
   quadrature", SIAM J. Matrix Anal. Appl. 38 (2017) 1075-1099.
.. [Yao2020] Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian: Neural networks through
   the lens of the Hessian", IEEE BigData 2020.
.. [Paige1971] C. C. Paige, "The computation of eigenvalues and eigenvectors of very large sparse
   matrices", PhD thesis, Univ. of London (1971): loss of orthogonality and ghost eigenvalues.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any
Array = jax.Array
LossFn = Callable[..., Array]

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "Eigenpairs",
    "Eigenpair",
    "AugmentedEigenpair",
    "LanczosResult",
    "TraceEstimate",
    "SpectralDensity",
    "hvp",
    "dataset_hvp",
    "hessian_operator",
    "augmented_operator",
    "hessian_matrix",
    "exact_spectrum",
    "lanczos",
    "tridiagonal_eigh",
    "top_eigenpairs",
    "min_eigenpair",
    "augmented_min_eigenpair",
    "hessian_trace",
    "spectral_density",
    "gaussian_density",
]

#: Default limit on the number of parameters for which a dense Hessian is built
#: (10,000 parameters: an 800 MB float64 matrix and 10,000 HVPs).
DEFAULT_MAX_PARAMS = 10_000

#: A Lanczos step "breaks down" (an invariant subspace was found) when the orthogonalised
#: residual is below this many machine epsilons times the norm of ``A q``.
_BREAKDOWN_EPS = 10.0


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------
class LanczosResult(NamedTuple):
    """Output of :func:`lanczos`.

    Attributes
    ----------
    alphas : Array, shape ``(m,)``
        Diagonal of the tridiagonal matrix ``T = Q^T A Q``.
    betas : Array, shape ``(m - 1,)``
        Off-diagonal of ``T``. A zero marks a breakdown (invariant subspace) after which the
        iteration restarted from a random vector orthogonal to the basis.
    basis : PyTree
        The orthonormal Lanczos vectors ``q_0 .. q_{m-1}`` as a pytree shaped like ``v0`` with a
        leading axis of length ``m`` (for a flat ``v0``: an ``(m, n)`` array).
    residual_norm : Array, scalar
        ``beta_m``, the norm of the residual after the last step: the Ritz pair ``(theta_i, Q^T
        s_i)`` has residual ``||A y_i - theta_i y_i|| = beta_m |s_{m-1, i}|``.
    """

    alphas: Array
    betas: Array
    basis: PyTree
    residual_norm: Array


class Eigenpairs(NamedTuple):
    """Extreme eigenpairs from :func:`top_eigenpairs`.

    Attributes
    ----------
    eigenvalues : Array, shape ``(k,)``
        Ritz values, largest first.
    eigenvectors : PyTree
        Unit-norm Ritz vectors as a params-shaped pytree with a leading axis of length ``k``.
    residual_norms : Array, shape ``(k,)``
        ``||H v_i - lambda_i v_i||`` measured with one extra HVP per pair.
    """

    eigenvalues: Array
    eigenvectors: PyTree
    residual_norms: Array


class Eigenpair(NamedTuple):
    """One eigenpair (from :func:`min_eigenpair`).

    Attributes
    ----------
    eigenvalue : Array, scalar
    eigenvector : PyTree
        Unit-norm, shaped like ``params``.
    residual_norm : Array, scalar
        ``||H v - lambda v||`` measured with one extra HVP.
    """

    eigenvalue: Array
    eigenvector: PyTree
    residual_norm: Array


class AugmentedEigenpair(NamedTuple):
    """Minimum eigenpair of the augmented Hessian (from :func:`augmented_min_eigenpair`).

    The eigenvector ``(v, t)`` has unit norm: ``||v||^2 + t^2 = 1``.

    Attributes
    ----------
    eigenvalue : Array, scalar
    vector : PyTree
        The parameter part ``v``, shaped like ``params``.
    scalar : Array, scalar
        The last component ``t``.
    residual_norm : Array, scalar
        Norm of ``A (v, t) - lambda (v, t)`` measured with one extra augmented matvec.
    """

    eigenvalue: Array
    vector: PyTree
    scalar: Array
    residual_norm: Array


class TraceEstimate(NamedTuple):
    """Hutchinson trace estimate (from :func:`hessian_trace`).

    Attributes
    ----------
    mean : Array, scalar
        The estimate of ``tr(H)``: the mean of ``z^T H z`` over the probes used.
    stderr : Array, scalar
        Standard error of the mean, ``s / sqrt(num_probes)`` with ``s`` the sample standard
        deviation of the probe values.
    num_probes : Array, int scalar
        Number of probes (= HVPs) used.
    samples : Array, shape ``(max_probes,)``
        The probe values ``z_i^T H z_i``; entries past ``num_probes`` are NaN.
    """

    mean: Array
    stderr: Array
    num_probes: Array
    samples: Array


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature output (from :func:`spectral_density`).

    Attributes
    ----------
    nodes : Array, shape ``(num_runs, m)``
        Gauss quadrature nodes (Ritz values of each run's tridiagonal matrix).
    weights : Array, shape ``(num_runs, m)``
        Quadrature weights: squared first components of the eigenvectors of ``T``; each row
        sums to 1.
    grid : Array, shape ``(num_points,)``
        Uniform grid spanning all runs' nodes, padded by ``pad`` kernel widths each side.
    density : Array, shape ``(num_points,)``
        Gaussian-smoothed density on ``grid``; integrates to 1.
    sigma : Array, scalar
        Standard deviation of the Gaussian kernel.
    """

    nodes: Array
    weights: Array
    grid: Array
    density: Array
    sigma: Array


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _precision_ctx(precision: str | None):
    """Context manager setting the default matmul precision (``None``: leave it unchanged)."""
    if precision is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(precision)


def _default_key(key):
    return jax.random.key(0) if key is None else key


def _num_params(params: PyTree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _leading_dim(batch: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves or np.ndim(leaves[0]) == 0:
        raise ValueError("each batch needs at least one array leaf with a leading sample axis")
    return int(np.shape(leaves[0])[0])


def _prepare_batches(batches, weights):
    """Validate ``batches`` and return normalised per-batch weights (or ``(None, None)``)."""
    if batches is None:
        if weights is not None:
            raise ValueError("weights given without batches")
        return None, None
    if isinstance(batches, list):
        if not batches:
            raise ValueError("batches is an empty list")
        counts = [_leading_dim(b) for b in batches]
    else:
        counts = [1] * _leading_dim(batches)
    w = np.asarray(counts if weights is None else weights, dtype=np.float64)
    if w.shape != (len(counts),):
        raise ValueError(f"weights must have shape ({len(counts)},), got {w.shape}")
    if np.any(w < 0) or not np.sum(w) > 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return batches, jnp.asarray(w / np.sum(w))


def _weighted_sum(fn: Callable[[PyTree], PyTree], batches, weights) -> PyTree:
    """``sum_b weights[b] * fn(batch_b)`` over a list (unrolled) or a stacked pytree (scan)."""

    def scale(w, tree):
        return jax.tree.map(lambda t: (w * t).astype(t.dtype), tree)

    if isinstance(batches, list):
        acc = None
        for i, b in enumerate(batches):
            term = scale(weights[i], fn(b))
            acc = term if acc is None else jax.tree.map(jnp.add, acc, term)
        return acc

    first = jax.tree.map(lambda x: x[0], batches)
    shapes = jax.eval_shape(fn, first)
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(acc, xs):
        b, w = xs
        return jax.tree.map(jnp.add, acc, scale(w, fn(b))), None

    acc, _ = jax.lax.scan(body, init, (batches, weights))
    return acc


def _flat_problem(loss_fn, params, batches, weights):
    """Flat view of the problem, traced inside a jit.

    Returns ``(x0, unravel, g, matvec)`` with ``x0`` the raveled params, ``g`` the gradient and
    ``matvec(v) = H v`` (flat). Without batches, :func:`jax.linearize` of the gradient is used,
    so the primal gradient pass is done once and each product costs only the tangent pass; with
    batches, each product is a forward-over-reverse ``jvp(grad)`` per batch, accumulated in a
    scan so that memory stays that of one batch.
    """
    x0, unravel = ravel_pytree(params)
    if batches is None:
        g, lin = jax.linearize(jax.grad(lambda x: loss_fn(unravel(x))), x0)
        return x0, unravel, g, lin

    weights = weights.astype(x0.dtype)

    def grad_b(x, b):
        return jax.grad(lambda y: loss_fn(unravel(y), b))(x)

    g = _weighted_sum(lambda b: grad_b(x0, b), batches, weights)

    def matvec(v):
        return _weighted_sum(lambda b: jax.jvp(lambda x: grad_b(x, b), (x0,), (v,))[1], batches, weights)

    return x0, unravel, g, matvec


def _flat_loss(loss_fn, unravel, batches, weights):
    if batches is None:
        return lambda x: loss_fn(unravel(x))

    def total(x):
        w = weights.astype(x.dtype)
        return _weighted_sum(lambda b: loss_fn(unravel(x), b), batches, w)

    return total


def _cast_like(v: PyTree, params: PyTree) -> PyTree:
    return jax.tree.map(lambda p, t: jnp.asarray(t, dtype=jnp.result_type(p)), params, v)


# --------------------------------------------------------------------------------------------
# Hessian-vector products and operators
# --------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _hvp_jit(loss_fn, params, v):
    return jax.jvp(jax.grad(loss_fn), (params,), (_cast_like(v, params),))[1]


def hvp(loss_fn: LossFn, params: PyTree, v: PyTree, *, precision: str | None = "highest") -> PyTree:
    r"""Hessian-vector product ``H v`` by forward-over-reverse differentiation.

    .. math:: H v = \frac{\partial}{\partial \epsilon} \nabla L(\theta + \epsilon v)\Big|_{\epsilon=0}

    computed as ``jax.jvp(jax.grad(loss_fn), (params,), (v,))``: one forward-mode pass through the
    reverse-mode gradient, about 2-3 gradient evaluations of work and no dense Hessian.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params) -> scalar``.
    params : PyTree
        Point ``theta`` at which the Hessian is taken.
    v : PyTree
        Direction, same structure as ``params`` (cast to the params' dtypes).
    precision : str or None
        Default matmul precision for the computation (``None`` leaves the ambient setting).

    Returns
    -------
    PyTree
        ``H v``, shaped like ``params``.

    Examples
    --------
    >>> loss = lambda p: jnp.sum(p["w"] ** 4)
    >>> hvp(loss, {"w": jnp.ones(3)}, {"w": jnp.ones(3)})["w"]   # 12 w^2 v
    Array([12., 12., 12.], dtype=float32)
    """
    with _precision_ctx(precision):
        return _hvp_jit(loss_fn, params, v)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _dataset_hvp_jit(loss_fn, params, v, batches, weights):
    v = _cast_like(v, params)

    def one(b):
        return jax.jvp(jax.grad(lambda p: loss_fn(p, b)), (params,), (v,))[1]

    return _weighted_sum(one, batches, weights)


def dataset_hvp(
    loss_fn: LossFn,
    params: PyTree,
    v: PyTree,
    batches: PyTree | list,
    weights: Sequence[float] | Array | None = None,
    *,
    precision: str | None = "highest",
) -> PyTree:
    r"""Data-averaged Hessian-vector product over a fixed set of batches.

    .. math:: H v = \sum_b w_b\, \nabla^2_\theta \ell(\theta, B_b)\, v, \qquad \sum_b w_b = 1,

    one forward-over-reverse product per batch, accumulated with ``lax.scan`` (stacked batches)
    or an unrolled sum (a list of batches), so peak memory is that of a single batch. With the
    default sample-count weights this equals the HVP of the mean loss over all samples.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, batch) -> scalar``, a mean over the batch's samples.
    params, v : PyTree
        Point and direction (``v`` is cast to the params' dtypes).
    batches : PyTree or list
        Stacked batches (leaves ``(num_batches, batch_size, ...)``) or a list of batch pytrees.
    weights : array-like, optional
        Per-batch weights, normalised to sum 1. Default: equal for stacked batches, sample counts
        for a list.
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    PyTree
        ``H v``, shaped like ``params``.
    """
    batches, w = _prepare_batches(batches, weights)
    if batches is None:
        raise ValueError("dataset_hvp needs batches")
    with _precision_ctx(precision):
        return _dataset_hvp_jit(loss_fn, params, v, batches, w)


def hessian_operator(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Gradient and Hessian matvec at ``params``, for use inside your own jitted code.

    The primal gradient pass is done once (:func:`jax.linearize`); each call of the returned
    ``matvec`` then costs one tangent pass. Not compiled by itself: call it inside ``jax.jit``
    (or eagerly for small problems). Matmul precision is whatever is in effect where it is traced.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.

    Returns
    -------
    grad : PyTree
        ``nabla L(params)``.
    matvec : callable
        ``v -> H v`` on params-shaped pytrees.
    """
    batches, w = _prepare_batches(batches, weights)
    x0, unravel, g, mv = _flat_problem(loss_fn, params, batches, w)

    def matvec(v):
        return unravel(mv(ravel_pytree(_cast_like(v, params))[0].astype(x0.dtype)))

    return unravel(g), matvec


def augmented_operator(
    loss_fn: LossFn,
    params: PyTree,
    delta: float,
    *,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
) -> Callable[[tuple[PyTree, Array]], tuple[PyTree, Array]]:
    r"""The augmented Hessian as a linear operator on ``(params-shaped pytree, scalar)``.

    .. math::
        A_\delta = \begin{pmatrix} H & g \\ g^\top & -\delta \end{pmatrix}, \qquad
        A_\delta \begin{pmatrix} v \\ t \end{pmatrix}
        = \begin{pmatrix} H v + t\, g \\ g^\top v - \delta t \end{pmatrix},

    with ``g`` the gradient and ``H`` the Hessian at ``params``. Each application costs one HVP
    (the gradient comes from the same :func:`jax.linearize`). Second-order methods such as
    homogeneous second-order descent use its minimum eigenvector as a search direction.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    delta : float
        The ``(n+1, n+1)`` entry is ``-delta``.

    Returns
    -------
    callable
        ``(v, t) -> (H v + t g, <g, v> - delta t)``.
    """
    g, matvec = hessian_operator(loss_fn, params, batches=batches, weights=weights)

    def apply(vt):
        v, t = vt
        hv = matvec(v)
        gv = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(v)))
        return jax.tree.map(lambda a, b: a + t * b, hv, g), gv - delta * t

    return apply


# --------------------------------------------------------------------------------------------
# Dense Hessian (exact oracle for small models)
# --------------------------------------------------------------------------------------------
def _check_size(params, max_params: int | None, what: str) -> int:
    n = _num_params(params)
    if max_params is not None and n > max_params:
        gib = n * n * 8 / 2**30
        raise ValueError(
            f"{what}: the model has {n:,} parameters, more than max_params={max_params:,} "
            f"(a dense {n:,} x {n:,} Hessian is {gib:.1f} GiB in float64 and costs {n:,} HVPs). "
            "Use the Lanczos-based top_eigenpairs / min_eigenpair / spectral_density / "
            "hessian_trace instead, or raise max_params."
        )
    return n


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _hessian_jit(loss_fn, params, batches, weights):
    x0, unravel = ravel_pytree(params)
    return jax.hessian(_flat_loss(loss_fn, unravel, batches, weights))(x0)


def hessian_matrix(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    precision: str | None = "highest",
) -> Array:
    r"""Dense Hessian ``H_{ij} = d^2 L / d theta_i d theta_j`` of the raveled parameters.

    Computed with :func:`jax.hessian` (forward-over-reverse, ``n`` HVPs batched by ``vmap``) on
    the flat vector of :func:`jax.flatten_util.ravel_pytree`; this is the exact oracle for
    small models. Cost: ``O(n)`` HVPs and ``O(n^2)`` memory.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    max_params : int or None
        Refuse models with more parameters (``None``: no limit).
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    Array, shape ``(n, n)``
        The Hessian in ``ravel_pytree`` order.

    Raises
    ------
    ValueError
        If the model has more than ``max_params`` parameters.
    """
    _check_size(params, max_params, "hessian_matrix")
    batches, w = _prepare_batches(batches, weights)
    with _precision_ctx(precision):
        return _hessian_jit(loss_fn, params, batches, w)


@functools.partial(jax.jit, static_argnames=("loss_fn", "eigenvectors"))
def _exact_spectrum_jit(loss_fn, params, batches, weights, eigenvectors):
    x0, unravel = ravel_pytree(params)
    h = jax.hessian(_flat_loss(loss_fn, unravel, batches, weights))(x0)
    h = 0.5 * (h + h.T)
    if not eigenvectors:
        return jnp.linalg.eigvalsh(h)
    evals, evecs = jnp.linalg.eigh(h)
    return evals, jax.vmap(unravel)(evecs.T)


def exact_spectrum(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    eigenvectors: bool = False,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    precision: str | None = "highest",
) -> Array | tuple[Array, PyTree]:
    """All Hessian eigenvalues (ascending) by ``eigh`` of the dense, symmetrised Hessian.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    eigenvectors : bool
        Also return the eigenvectors.
    max_params : int or None
        Refuse models with more parameters (``None``: no limit).
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    eigenvalues : Array, shape ``(n,)``
        Ascending.
    eigenvectors : PyTree, only if ``eigenvectors=True``
        Params-shaped pytree with a leading axis of length ``n``; entry ``i`` belongs to
        ``eigenvalues[i]``.

    Raises
    ------
    ValueError
        If the model has more than ``max_params`` parameters.
    """
    _check_size(params, max_params, "exact_spectrum")
    batches, w = _prepare_batches(batches, weights)
    with _precision_ctx(precision):
        return _exact_spectrum_jit(loss_fn, params, batches, w, eigenvectors)


# --------------------------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------------------------
def _orthogonalise(w: Array, q: Array) -> Array:
    """Two passes of classical Gram-Schmidt of ``w`` against the rows of ``q`` (zero rows are inert)."""
    w = w - q.T @ (q @ w)
    return w - q.T @ (q @ w)


def _lanczos_flat(matvec, v0: Array, num_steps: int, reorthogonalize: bool = True):
    """Lanczos on flat vectors. Returns ``(alphas (m,), betas (m-1,), Q (m, n), beta_m)``."""
    n = v0.shape[0]
    m = min(int(num_steps), n)
    if m < 1:
        raise ValueError("num_steps must be at least 1")
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps

    def random_unit(j, basis):
        # Restart vector after a breakdown: uniform pseudo-random entries from a murmur3-style
        # integer hash of (index, step) (no PRNG call: much cheaper to compile), made
        # orthogonal to the basis and normalised.
        h = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1) + (jnp.asarray(j).astype(jnp.uint32) + jnp.uint32(1)) * jnp.uint32(0x85EBCA77)
        h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
        h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
        h = h ^ (h >> 16)
        r = (h >> 8).astype(dtype) / (1 << 24) - 0.5
        r = _orthogonalise(r, basis)
        nr = jnp.linalg.norm(r)
        return r / jnp.where(nr > 0, nr, 1)

    basis = jnp.zeros((m, n), dtype)
    nv0 = jnp.linalg.norm(v0)
    q0 = jnp.where(nv0 > 0, v0 / jnp.where(nv0 > 0, nv0, 1), random_unit(n, basis))
    basis = basis.at[0].set(q0)

    def body(j, carry):
        basis, alphas, betas = carry
        q = basis[j]
        w = matvec(q)
        alpha = jnp.vdot(q, w).real.astype(dtype)
        w_norm = jnp.linalg.norm(w)
        if reorthogonalize:
            w = _orthogonalise(w, basis)
        else:
            jm1 = jnp.maximum(j - 1, 0)
            prev = jnp.where(j > 0, betas[jm1], 0) * basis[jm1]
            w = w - alpha * q - prev
        beta = jnp.linalg.norm(w)
        broke = beta <= _BREAKDOWN_EPS * eps * w_norm
        q_next = jax.lax.cond(
            broke,
            lambda: random_unit(j, basis),
            lambda: w / jnp.where(beta > 0, beta, 1),
        )
        beta = jnp.where(broke, jnp.zeros_like(beta), beta)
        basis = basis.at[j + 1].set(q_next, mode="drop")
        return basis, alphas.at[j].set(alpha), betas.at[j].set(beta)

    init = (basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype))
    basis, alphas, betas = jax.lax.fori_loop(0, m, body, init)
    return alphas, betas[:-1], basis, betas[-1]


def tridiagonal_eigh(alphas: Array, betas: Array) -> tuple[Array, Array]:
    """Eigen-decomposition of the symmetric tridiagonal matrix ``T = tridiag(betas, alphas, betas)``.

    Uses :func:`jax.numpy.linalg.eigh` on the dense ``(m, m)`` matrix (``m`` is small; jax's
    ``eigh_tridiagonal`` returns no eigenvectors).

    Parameters
    ----------
    alphas : Array, shape ``(m,)``
    betas : Array, shape ``(m - 1,)``

    Returns
    -------
    eigenvalues : Array, shape ``(m,)``
        Ascending Ritz values.
    eigenvectors : Array, shape ``(m, m)``
        Column ``i`` is the eigenvector ``s_i`` of ``T``; ``s_i[0]**2`` is the Gauss quadrature
        weight and ``|s_i[-1]|`` times the final residual norm bounds the Ritz residual.
    """
    t = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)
    return jnp.linalg.eigh(t)


@functools.partial(jax.jit, static_argnames=("matvec", "num_steps", "reorthogonalize"))
def _lanczos_jit(matvec, v0, num_steps, reorthogonalize):
    x0, unravel = ravel_pytree(v0)

    def flat_mv(x):
        return ravel_pytree(matvec(unravel(x)))[0].astype(x0.dtype)

    alphas, betas, q, res = _lanczos_flat(flat_mv, x0, num_steps, reorthogonalize)
    return LanczosResult(alphas, betas, jax.vmap(unravel)(q), res)


def lanczos(
    matvec: Callable[[PyTree], PyTree],
    v0: PyTree,
    num_steps: int,
    *,
    reorthogonalize: bool = True,
) -> LanczosResult:
    r"""Lanczos tridiagonalisation of a symmetric linear operator with full reorthogonalisation.

    Builds an orthonormal basis ``Q = [q_0, ..., q_{m-1}]`` of the Krylov space
    ``span{v0, A v0, ..., A^{m-1} v0}`` and the tridiagonal ``T = Q^T A Q`` [Lanczos1950]_:

    .. math::
        w_j = A q_j, \quad \alpha_j = q_j^\top w_j, \quad
        r_j = (I - Q Q^\top)^2 w_j, \quad \beta_j = \|r_j\|, \quad q_{j+1} = r_j / \beta_j.

    Each residual is orthogonalised against *all* previous vectors by two classical Gram-Schmidt
    passes ("twice is enough"). Without it, rounding errors make the basis lose orthogonality as
    soon as a Ritz value converges, and converged eigenvalues reappear as spurious "ghost"
    copies [Paige1971]_ -- within a few dozen steps in float32. The whole iteration is one
    :func:`jax.lax.fori_loop`; ``Q`` is stored (``m * n`` memory) and each step costs one matvec
    plus ``O(m n)`` work.

    Breakdown: when ``beta_j <= 10 eps ||A q_j||`` the Krylov space is (numerically) invariant.
    Then ``beta_j`` is set to exactly 0 and the iteration continues from a random unit vector
    orthogonal to ``Q`` (a fixed pseudo-random vector, orthogonalised), so ``T`` becomes block diagonal and no NaN appears; the later blocks find
    further eigenvalues (with zero Gauss quadrature weight for the first block's start vector).
    ``num_steps`` is capped at the dimension ``n``.

    Parameters
    ----------
    matvec : callable
        ``v -> A v`` for symmetric ``A``, on pytrees shaped like ``v0``. Must be hashable (it is a
        static argument of the compiled loop); reuse one function object to avoid re-tracing.
    v0 : PyTree
        Start vector (normalised internally; a zero vector is replaced by a random one).
    num_steps : int
        Number of Lanczos steps ``m`` (= matvecs).
    reorthogonalize : bool
        Full reorthogonalisation (default). ``False`` gives the plain three-term recurrence,
        useful only to demonstrate ghost eigenvalues.

    Returns
    -------
    LanczosResult
        ``alphas (m,)``, ``betas (m-1,)``, ``basis`` (``v0``-shaped leaves with a leading ``m``
        axis) and the final residual norm ``beta_m``. Ritz pairs follow from
        :func:`tridiagonal_eigh`.

    Examples
    --------
    >>> a = jnp.diag(jnp.arange(1.0, 101.0))
    >>> res = lanczos(lambda v: a @ v, jnp.ones(100), 30)
    >>> float(tridiagonal_eigh(res.alphas, res.betas)[0][-1])   # ~ 100
    """
    return _lanczos_jit(matvec, v0, num_steps, reorthogonalize)


# --------------------------------------------------------------------------------------------
# Extreme eigenpairs
# --------------------------------------------------------------------------------------------
def _default_steps(n: int, k: int) -> int:
    return min(n, max(4 * k + 40, 60))


@functools.partial(jax.jit, static_argnames=("loss_fn", "k", "num_steps", "largest"))
def _extreme_jit(loss_fn, params, batches, weights, key, k, num_steps, largest):
    x0, unravel, _, mv = _flat_problem(loss_fn, params, batches, weights)
    v0 = jax.random.normal(key, x0.shape, x0.dtype)
    alphas, betas, q, _ = _lanczos_flat(mv, v0, num_steps)
    m = alphas.shape[0]
    if k > m:
        raise ValueError(f"k={k} eigenpairs requested from only {m} Lanczos steps")
    evals, s = tridiagonal_eigh(alphas, betas)
    if largest:
        evals, s = evals[::-1][:k], s[:, ::-1][:, :k]
    else:
        evals, s = evals[:k], s[:, :k]
    vecs = s.T @ q
    vecs = vecs / jnp.linalg.norm(vecs, axis=1, keepdims=True)
    hv = jax.lax.map(mv, vecs)
    res = jnp.linalg.norm(hv - evals[:, None] * vecs, axis=1)
    return evals, jax.vmap(unravel)(vecs), res


def top_eigenpairs(
    loss_fn: LossFn,
    params: PyTree,
    k: int = 1,
    *,
    num_steps: int | None = None,
    key: Array | None = None,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> Eigenpairs:
    r"""The ``k`` algebraically largest Hessian eigenpairs by Lanczos with full reorthogonalisation.

    Runs ``num_steps`` Lanczos steps from a Gaussian start vector on the HVP operator, takes the
    top ``k`` Ritz pairs ``(theta_i, Q^T s_i)`` of ``T`` and measures each residual
    ``||H v_i - theta_i v_i||`` with one more HVP. Cost: ``num_steps + k`` HVPs. Extreme
    eigenvalues converge fastest: the error decays like ``exp(-2 m sqrt(gap))`` (Kaniel-Paige),
    far faster than the power iteration used by PyHessian [Yao2020]_, which also stops at a
    1e-3 relative change.

    For a loss Hessian the largest algebraic and the largest magnitude eigenvalue coincide unless
    negative curvature dominates; use :func:`min_eigenpair` for the other end.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    k : int
        Number of eigenpairs.
    num_steps : int, optional
        Lanczos steps (default ``min(n, max(4k + 40, 60))``).
    key : PRNG key, optional
        Start vector seed (default ``jax.random.key(0)``).
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    Eigenpairs
        ``eigenvalues (k,)`` descending, ``eigenvectors`` (params-shaped leaves with a leading
        ``k`` axis, unit norm), ``residual_norms (k,)``.
    """
    n = _num_params(params)
    steps = _default_steps(n, k) if num_steps is None else int(num_steps)
    batches, w = _prepare_batches(batches, weights)
    with _precision_ctx(precision):
        return Eigenpairs(*_extreme_jit(loss_fn, params, batches, w, _default_key(key), int(k), steps, True))


def min_eigenpair(
    loss_fn: LossFn,
    params: PyTree,
    *,
    num_steps: int = 80,
    key: Array | None = None,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> Eigenpair:
    r"""The algebraically smallest Hessian eigenpair by Lanczos with full reorthogonalisation.

    Same algorithm as :func:`top_eigenpairs` at the other end of the Ritz spectrum. The minimum
    eigenvalue of a trained network's Hessian usually lies near a dense bulk around zero and
    converges more slowly than the top one; check ``residual_norm`` (the eigenvalue error is at
    most the residual norm, and about ``residual^2 / gap`` once isolated).

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    num_steps : int
        Lanczos steps (default 80).
    key : PRNG key, optional
        Start vector seed (default ``jax.random.key(0)``).
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    Eigenpair
        ``eigenvalue``, unit ``eigenvector`` (params-shaped), ``residual_norm``.
    """
    batches, w = _prepare_batches(batches, weights)
    with _precision_ctx(precision):
        evals, vecs, res = _extreme_jit(loss_fn, params, batches, w, _default_key(key), 1, int(num_steps), False)
    return Eigenpair(evals[0], jax.tree.map(lambda x: x[0], vecs), res[0])


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_steps"))
def _augmented_jit(loss_fn, params, batches, weights, delta, key, num_steps):
    x0, unravel, g, mv = _flat_problem(loss_fn, params, batches, weights)
    n = x0.shape[0]
    delta = jnp.asarray(delta, x0.dtype)

    def amv(z):
        v, t = z[:n], z[n]
        return jnp.concatenate([mv(v) + t * g, jnp.vdot(g, v)[None] - delta * t[None]])

    z0 = jax.random.normal(key, (n + 1,), x0.dtype)
    alphas, betas, q, _ = _lanczos_flat(amv, z0, num_steps)
    evals, s = tridiagonal_eigh(alphas, betas)
    z = s[:, 0] @ q
    z = z / jnp.linalg.norm(z)
    res = jnp.linalg.norm(amv(z) - evals[0] * z)
    return evals[0], unravel(z[:n]), z[n], res


def augmented_min_eigenpair(
    loss_fn: LossFn,
    params: PyTree,
    delta: float,
    *,
    num_steps: int = 100,
    key: Array | None = None,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> AugmentedEigenpair:
    r"""Minimum eigenpair of the augmented Hessian ``[[H, g], [g^T, -delta]]``.

    Lanczos with full reorthogonalisation on the ``(n+1)``-dimensional operator of
    :func:`augmented_operator` (one HVP per step). By Cauchy interlacing the minimum eigenvalue is
    at most ``min(lambda_min(H), -delta)``: it sits at the lower edge of the spectrum and
    converges quickly. The eigenvector's sign is arbitrary.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    delta : float
        The ``(n+1, n+1)`` entry is ``-delta``.
    num_steps : int
        Lanczos steps (default 100, capped at ``n + 1``).
    key : PRNG key, optional
        Start vector seed (default ``jax.random.key(0)``).
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    AugmentedEigenpair
        ``eigenvalue``, ``vector`` (params-shaped part), ``scalar`` (last component), and
        ``residual_norm`` (one extra matvec). ``(vector, scalar)`` has unit norm.
    """
    batches, w = _prepare_batches(batches, weights)
    with _precision_ctx(precision):
        out = _augmented_jit(loss_fn, params, batches, w, delta, _default_key(key), int(num_steps))
    return AugmentedEigenpair(*out)


# --------------------------------------------------------------------------------------------
# Trace (Hutchinson)
# --------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("loss_fn", "max_probes", "min_probes"))
def _trace_jit(loss_fn, params, batches, weights, key, max_probes, min_probes, atol, rtol):
    x0, _, _, mv = _flat_problem(loss_fn, params, batches, weights)
    n, dtype = x0.shape[0], x0.dtype
    atol = jnp.asarray(atol, dtype)
    rtol = jnp.asarray(rtol, dtype)

    def stderr(i, m2):
        i_f = jnp.maximum(i, 1).astype(dtype)
        var = m2 / jnp.maximum(i_f - 1, 1)
        return jnp.sqrt(var / i_f)

    def cond(c):
        i, mean, m2, _ = c
        done = (i >= min_probes) & (stderr(i, m2) <= jnp.maximum(atol, rtol * jnp.abs(mean)))
        return (i < max_probes) & ~done

    def body(c):
        i, mean, m2, samples = c
        z = jax.random.rademacher(jax.random.fold_in(key, i), (n,), dtype)
        s = jnp.vdot(z, mv(z))
        i1 = i + 1
        delta = s - mean
        mean = mean + delta / i1.astype(dtype)
        m2 = m2 + delta * (s - mean)
        return i1, mean, m2, samples.at[i].set(s)

    init = (jnp.asarray(0, jnp.int32), jnp.zeros((), dtype), jnp.zeros((), dtype), jnp.full((max_probes,), jnp.nan, dtype))
    i, mean, m2, samples = jax.lax.while_loop(cond, body, init)
    return TraceEstimate(mean, stderr(i, m2), i, samples)


def hessian_trace(
    loss_fn: LossFn,
    params: PyTree,
    *,
    key: Array | None = None,
    max_probes: int = 100,
    min_probes: int = 10,
    stderr_tol: float | None = None,
    rel_stderr_tol: float | None = 1e-2,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> TraceEstimate:
    r"""Hutchinson estimate of ``tr(H)`` with Rademacher probes, stopping on a standard error.

    .. math:: \operatorname{tr} H = \mathbb{E}_z[z^\top H z], \quad z_i \in \{\pm 1\} \text{ i.i.d.},
              \qquad \operatorname{Var}[z^\top H z] = 2 \sum_{i \ne j} H_{ij}^2

    [Hutchinson1989]_. Probes are drawn one per iteration of a :func:`jax.lax.while_loop`
    (one HVP each) with a running (Welford) mean and variance; the loop stops once at least
    ``min_probes`` were used and the standard error ``s / sqrt(N)`` is at most
    ``max(stderr_tol, rel_stderr_tol * |mean|)``, or after ``max_probes``.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    key : PRNG key, optional
        Probe seed (default ``jax.random.key(0)``).
    max_probes, min_probes : int
        Bounds on the number of probes (HVPs).
    stderr_tol : float or None
        Absolute standard-error target (``None``: 0).
    rel_stderr_tol : float or None
        Standard-error target relative to ``|mean|`` (``None``: 0). With both targets 0 the
        loop runs ``max_probes`` probes (unless the variance is exactly zero, e.g. diagonal H).
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    TraceEstimate
        ``mean``, ``stderr``, ``num_probes`` and the per-probe ``samples``.
    """
    if not 1 <= min_probes <= max_probes:
        raise ValueError("need 1 <= min_probes <= max_probes")
    batches, w = _prepare_batches(batches, weights)
    atol = 0.0 if stderr_tol is None else float(stderr_tol)
    rtol = 0.0 if rel_stderr_tol is None else float(rel_stderr_tol)
    with _precision_ctx(precision):
        return _trace_jit(loss_fn, params, batches, w, _default_key(key), int(max_probes), int(min_probes), atol, rtol)


# --------------------------------------------------------------------------------------------
# Spectral density (stochastic Lanczos quadrature)
# --------------------------------------------------------------------------------------------
def _gaussian_density(nodes, weights, num_points, sigma, rel_sigma, pad):
    dtype = nodes.dtype
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    spread = hi - lo
    spread = jnp.where(spread > 0, spread, jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 1))
    sigma = jnp.asarray(sigma, dtype)
    sigma = jnp.where(sigma > 0, sigma, jnp.asarray(rel_sigma, dtype) * spread)
    grid = jnp.linspace(lo - pad * sigma, hi + pad * sigma, num_points, dtype=dtype)
    w = weights.reshape(-1) / nodes.shape[0]
    z = (grid[:, None] - nodes.reshape(-1)[None, :]) / sigma
    density = jnp.exp(-0.5 * z * z) @ w / (sigma * math.sqrt(2 * math.pi))
    return grid, density, sigma


_gaussian_density_jit = jax.jit(_gaussian_density, static_argnames=("num_points",))


def gaussian_density(
    nodes: Array,
    weights: Array,
    *,
    num_points: int = 2000,
    sigma: float | None = None,
    rel_sigma: float = 0.005,
    pad: float = 6.0,
) -> tuple[Array, Array, Array]:
    r"""Smooth SLQ quadrature rules into a density on a uniform grid.

    .. math:: \phi(x) = \frac{1}{R} \sum_{r=1}^{R} \sum_{i=1}^{m} w_{ri}\,
              \frac{1}{\sigma\sqrt{2\pi}} \exp\!\Big(-\frac{(x - \lambda_{ri})^2}{2\sigma^2}\Big)

    on ``num_points`` points from ``min(nodes) - pad sigma`` to ``max(nodes) + pad sigma``, so the
    grid spans every run's extreme nodes and the Gaussian tails; ``phi`` then integrates to 1 up
    to ``sum(w) - 1`` and a tail mass of ``erfc(pad / sqrt 2)`` (no renormalisation is applied).

    Parameters
    ----------
    nodes, weights : Array, shape ``(R, m)``
        Quadrature rules, one row per run; each row of ``weights`` sums to 1.
    num_points : int
        Grid size. Keep the spacing below ``sigma`` (the default ``rel_sigma`` gives about 10
        points per ``sigma``).
    sigma : float, optional
        Kernel standard deviation; default ``rel_sigma * (max(nodes) - min(nodes))``.
    rel_sigma : float
        Relative kernel width used when ``sigma`` is not given.
    pad : float
        Grid padding in kernel widths.

    Returns
    -------
    grid, density : Array, shape ``(num_points,)``
    sigma : Array, scalar
        The kernel width used.
    """
    nodes = jnp.atleast_2d(jnp.asarray(nodes))
    weights = jnp.atleast_2d(jnp.asarray(weights, nodes.dtype))
    return _gaussian_density_jit(nodes, weights, int(num_points), 0.0 if sigma is None else float(sigma), float(rel_sigma), float(pad))


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_runs", "num_steps", "num_points"))
def _slq_jit(loss_fn, params, batches, weights, key, num_runs, num_steps, num_points, sigma, rel_sigma, pad):
    x0, _, _, mv = _flat_problem(loss_fn, params, batches, weights)
    n, dtype = x0.shape[0], x0.dtype

    def one_run(k):
        z = jax.random.rademacher(k, (n,), dtype)
        alphas, betas, _, _ = _lanczos_flat(mv, z, num_steps)
        evals, s = tridiagonal_eigh(alphas, betas)
        return evals, s[0] ** 2

    nodes, w = jax.lax.map(one_run, jax.random.split(key, num_runs))
    grid, density, sigma = _gaussian_density(nodes, w, num_points, sigma, rel_sigma, pad)
    return SpectralDensity(nodes, w, grid, density, sigma)


def spectral_density(
    loss_fn: LossFn,
    params: PyTree,
    *,
    num_runs: int = 10,
    num_steps: int = 100,
    key: Array | None = None,
    num_points: int = 2000,
    sigma: float | None = None,
    rel_sigma: float = 0.005,
    pad: float = 6.0,
    batches: PyTree | list | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> SpectralDensity:
    r"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    For each of ``R = num_runs`` Rademacher start vectors ``z`` (normalised), ``m = num_steps``
    Lanczos steps give ``T = S diag(theta) S^T``; the Gauss quadrature rule with nodes
    ``theta_i`` and weights ``tau_i = s_{0i}^2`` satisfies

    .. math:: \frac{z^\top f(H) z}{z^\top z} \approx \sum_i \tau_i f(\theta_i),

    exactly for polynomials of degree ``<= 2m - 1``, and ``E[z^T f(H) z] / n = tr f(H) / n``, so
    the average of the rules over runs estimates the spectral measure
    ``(1/n) sum_j delta(x - lambda_j)`` [Ubaru2017]_, as in PyHessian's ``density()``
    [Yao2020]_. In particular ``sum_i tau_i theta_i`` and ``sum_i tau_i theta_i^2`` estimate
    ``tr(H)/n`` and ``||H||_F^2 / n`` without bias. The rules are then smoothed with
    :func:`gaussian_density`. Runs are sequential (``lax.map``), so memory is that of one
    ``(m, n)`` Lanczos basis. Cost: ``R m`` HVPs.

    Parameters
    ----------
    loss_fn, params, batches, weights
        As in the module docstring.
    num_runs : int
        Number of start vectors ``R``.
    num_steps : int
        Lanczos steps per run ``m`` (capped at ``n``).
    key : PRNG key, optional
        Seed (default ``jax.random.key(0)``).
    num_points, sigma, rel_sigma, pad
        Smoothing, see :func:`gaussian_density`.
    precision : str or None
        Default matmul precision (``None``: ambient).

    Returns
    -------
    SpectralDensity
        ``nodes (R, m)``, ``weights (R, m)``, ``grid``, ``density`` and ``sigma``.
    """
    batches, w = _prepare_batches(batches, weights)
    with _precision_ctx(precision):
        return _slq_jit(
            loss_fn, params, batches, w, _default_key(key), int(num_runs), int(num_steps), int(num_points),
            0.0 if sigma is None else float(sigma), float(rel_sigma), float(pad),
        )
