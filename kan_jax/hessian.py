r"""Hessian analysis of a loss: the loss-based façade over :mod:`kan_jax.curvature`.

Every function takes a scalar loss and a parameter pytree (any Flax model's ``params``) and
returns pytrees wherever a vector in parameter space is meant; the flat order is that of
:func:`jax.flatten_util.ravel_pytree`. Each is a thin composition of an operator
(:mod:`kan_jax.curvature.operators`) and an algorithm on any operator
(:mod:`kan_jax.curvature.lanczos`, :mod:`kan_jax.curvature.stochastic`).

Two forms of loss are accepted:

* ``loss_fn(params) -> scalar`` (``batches=None``): the data are closed over (or bound with
  :func:`functools.partial`). Products share one primal pass (:func:`jax.linearize`).
* ``loss_fn(params, batch) -> scalar`` with ``batches=`` a **stacked** pytree (every leaf has a
  leading batch-index axis: ``(num_batches, batch_size, ...)``) and optional per-batch
  ``weights`` (default equal, normalised to sum 1). The analysed loss is

  .. math:: L(\theta) = \sum_b w_b\, \ell(\theta, B_b),

  and every Hessian-vector product runs over the same batches (one ``lax.scan``), so Lanczos
  sees one fixed symmetric operator. This is the only batch form: Python lists are refused
  (:func:`kan_jax.curvature.stack_batches` stacks equal-size batches).

Compilation: the loss is *not* a static argument. Arrays inside it (closure cells,
``functools.partial`` arguments, pytrees) are traced, and the compiled program is keyed by the
function's code (:mod:`kan_jax.curvature._trace`): calling again with a fresh ``lambda`` or
``functools.partial`` over the same code, or with new data of the same shapes, does not
recompile. Python numbers inside the loss are constants (a new value recompiles).

Analysis runs under ``jax.default_matmul_precision("highest")`` by default: TF32 matrix
products on GPUs otherwise limit eigenvalue accuracy to about 1e-4 relative.

References
----------
.. [Lanczos1950] C. Lanczos, J. Res. Nat. Bur. Standards 45 (1950) 255-282.
.. [Hutchinson1989] M. F. Hutchinson, Comm. Statist. Simulation Comput. 18 (1989) 1059-1076.
.. [Meyer2021] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++", SOSA 2021.
.. [Ubaru2017] S. Ubaru, J. Chen, Y. Saad, SIAM J. Matrix Anal. Appl. 38 (2017) 1075-1099.
.. [Yao2020] Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian", IEEE BigData 2020.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from kan_jax.curvature import operators as ops
from kan_jax.curvature import stochastic as st
from kan_jax.curvature._trace import jit_call
from kan_jax.curvature.lanczos import Eigenpairs, LanczosResult, eigenpairs, lanczos_tree, tridiagonal_eigh
from kan_jax.curvature.oracle import DEFAULT_MAX_PARAMS, _num_params, _precision_ctx, _prepare, exact_spectrum, hessian_matrix
from kan_jax.curvature.stochastic import SpectralDensity, TraceEstimate

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

class Eigenpair(NamedTuple):
    """One eigenpair (from :func:`min_eigenpair`): ``eigenvalue``, unit ``eigenvector``
    (params-shaped) and ``residual_norm = ||H v - lambda v||`` (one extra HVP)."""

    eigenvalue: Array
    eigenvector: PyTree
    residual_norm: Array


class AugmentedEigenpair(NamedTuple):
    """Minimum eigenpair ``(v, t)`` of ``[[H, g], [g^T, -delta]]``, ``||v||^2 + t^2 = 1``.

    Attributes
    ----------
    eigenvalue : Array, scalar
    vector : PyTree
        The parameter part ``v``.
    scalar : Array, scalar
        The last component ``t``.
    residual_norm : Array, scalar
        Norm of ``F (v, t) - lambda (v, t)`` (one extra matvec).
    """

    eigenvalue: Array
    vector: PyTree
    scalar: Array
    residual_norm: Array


# --------------------------------------------------------------------------------------------
# Helpers: binding a loss to a flat operator inside a trace
# --------------------------------------------------------------------------------------------
def _default_key(key):
    return jax.random.key(0) if key is None else key


def _bind(loss_fn, params, batches, weights):
    """Inside a trace: ``(x0, unravel, g, flat_matvec)`` of the analysed loss at ``params``."""
    x0, unravel = ravel_pytree(params)
    if batches is None:
        g, mv = ops.linearized_hessian(loss_fn, params)
        return x0, unravel, ravel_pytree(g)[0], lambda x: ravel_pytree(mv(unravel(x)))[0].astype(x0.dtype)
    w = weights.astype(x0.dtype)
    grad_op = ops.over_batches(lambda _, p, b: jax.grad(loss_fn)(p, b))
    g = grad_op(params, params, batches, w)
    dmv = ops.over_batches(ops.hessian(loss_fn))
    return x0, unravel, ravel_pytree(g)[0], lambda x: ravel_pytree(dmv(unravel(x), params, batches, w))[0].astype(x0.dtype)


# --------------------------------------------------------------------------------------------
# Products and operators
# --------------------------------------------------------------------------------------------
def _hvp_impl(loss_fn, params, v):
    return ops.hessian(loss_fn)(v, params)


def hvp(loss_fn: LossFn, params: PyTree, v: PyTree, *, precision: str | None = "highest") -> PyTree:
    r"""Hessian-vector product ``H v`` by forward-over-reverse differentiation.

    .. math:: H v = \frac{\partial}{\partial \epsilon} \nabla L(\theta + \epsilon v)\Big|_{\epsilon=0}

    :func:`kan_jax.curvature.hessian` compiled for ``loss_fn(params) -> scalar``.

    Examples
    --------
    >>> loss = lambda p: jnp.sum(p["w"] ** 4)
    >>> hvp(loss, {"w": jnp.ones(3)}, {"w": jnp.ones(3)})["w"]   # 12 w^2 v
    Array([12., 12., 12.], dtype=float32)
    """
    with _precision_ctx(precision):
        return jit_call(_hvp_impl, loss_fn, params, v)


def _dataset_hvp_impl(loss_fn, params, v, batches, weights):
    w = weights.astype(ravel_pytree(params)[0].dtype)
    return ops.over_batches(ops.hessian(loss_fn))(ops._cast_like(v, params), params, batches, w)


def dataset_hvp(
    loss_fn: LossFn,
    params: PyTree,
    v: PyTree,
    batches: PyTree,
    weights: Sequence[float] | Array | None = None,
    *,
    precision: str | None = "highest",
) -> PyTree:
    r"""Data-averaged Hessian-vector product over stacked batches.

    .. math:: H v = \sum_b w_b\, \nabla^2_\theta \ell(\theta, B_b)\, v, \qquad \sum_b w_b = 1,

    one forward-over-reverse product per batch in one ``lax.scan``
    (:func:`kan_jax.curvature.over_batches`), so memory is that of a single batch.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, batch) -> scalar``.
    params, v : PyTree
    batches : PyTree
        Stacked batches (leaves ``(num_batches, batch_size, ...)``).
    weights : array-like, optional
        Per-batch weights (default equal), normalised to sum 1.
    """
    if batches is None:
        raise ValueError("dataset_hvp needs batches")
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        return jit_call(_dataset_hvp_impl, loss_fn, params, v, batches, w)


def hessian_operator(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Gradient and Hessian matvec at ``params`` for use inside your own jitted code.

    Without batches the primal pass is shared (:func:`jax.linearize`); with stacked batches each
    product scans the batches. Not compiled by itself.

    Returns
    -------
    grad : PyTree
    matvec : callable
        ``v -> H v`` on params-shaped pytrees.
    """
    batches, w = _prepare(batches, weights)
    x0, unravel, g, mv = _bind(loss_fn, params, batches, w)

    def matvec(v):
        return unravel(mv(ravel_pytree(ops._cast_like(v, params))[0].astype(x0.dtype)))

    return unravel(g), matvec


def augmented_operator(
    loss_fn: LossFn,
    params: PyTree,
    delta: float,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
) -> Callable[[tuple[PyTree, Array]], tuple[PyTree, Array]]:
    r"""The augmented Hessian ``[[H, g], [g^T, -delta]]`` at ``params`` as ``(v, t) -> (Hv + t g,
    <g, v> - delta t)`` (one HVP each): :func:`kan_jax.curvature.augmented` bound to the loss."""
    g, matvec = hessian_operator(loss_fn, params, batches=batches, weights=weights)
    amv = ops.augmented(lambda v: matvec(v))
    return lambda vt: amv(vt, g, delta)


# --------------------------------------------------------------------------------------------
# Lanczos and extreme eigenpairs
# --------------------------------------------------------------------------------------------
def _lanczos_impl(matvec, v0, num_steps, reorthogonalize, args):
    return lanczos_tree(matvec, v0, num_steps, *args, reorthogonalize=reorthogonalize)


def lanczos(
    matvec: Callable[..., PyTree],
    v0: PyTree,
    num_steps: int,
    *args: Any,
    reorthogonalize: bool | str = True,
) -> LanczosResult:
    r"""Lanczos tridiagonalisation of a symmetric operator with full reorthogonalisation.

    Builds ``Q = [q_0 .. q_{m-1}]`` spanning ``span{v0, A v0, ..., A^{m-1} v0}`` and
    ``T = Q^T A Q`` [Lanczos1950]_, keeping ``Q`` orthogonal to working precision by blocked,
    selective Gram-Schmidt (:mod:`kan_jax.curvature.lanczos`), with breakdown restarts.

    Parameters
    ----------
    matvec : callable
        ``matvec(v, *args) -> A v`` on pytrees shaped like ``v0``. Arrays in ``args`` and in
        ``matvec``'s closure are traced: a new closure over the same code does not recompile.
    v0 : PyTree
        Start vector (normalised; a zero vector is replaced by a pseudo-random one).
    num_steps : int
        Steps ``m`` (= matvecs), capped at the dimension.
    *args
        Extra arguments of ``matvec`` (parameters, data).
    reorthogonalize : bool or str
        ``True`` (blocked, selective), ``"dense"`` (two passes over the whole basis), ``False``.

    Returns
    -------
    LanczosResult
        ``alphas (m,)``, ``betas (m-1,)``, ``basis`` (leading ``m`` axis) and ``beta_m``.

    Examples
    --------
    >>> a = jnp.diag(jnp.arange(1.0, 101.0))
    >>> res = lanczos(lambda v: a @ v, jnp.ones(100), 30)
    >>> float(tridiagonal_eigh(res.alphas, res.betas)[0][-1])   # ~ 100
    """
    return jit_call(_lanczos_impl, matvec, v0, int(num_steps), reorthogonalize, args)


def _default_steps(n: int, k: int) -> int:
    return min(n, max(4 * k + 40, 60))


def _extreme_impl(loss_fn, params, batches, weights, key, k, num_steps, largest):
    x0, unravel, _, mv = _bind(loss_fn, params, batches, weights)
    v0 = jax.random.normal(key, x0.shape, x0.dtype)
    evals, vecs, res = eigenpairs(mv, v0, num_steps, k, largest=largest)
    return evals, jax.vmap(unravel)(vecs), res


def top_eigenpairs(
    loss_fn: LossFn,
    params: PyTree,
    k: int = 1,
    *,
    num_steps: int | None = None,
    key: Array | None = None,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> Eigenpairs:
    r"""The ``k`` algebraically largest Hessian eigenpairs by Lanczos.

    ``num_steps`` (default ``min(n, max(4k + 40, 60))``) Lanczos steps from a Gaussian start,
    the top ``k`` Ritz pairs and their residuals ``||H v_i - theta_i v_i||`` (``k`` more HVPs).
    Extreme eigenvalues converge like ``exp(-2 m sqrt(gap))`` (Kaniel-Paige), far faster than
    the power iteration of PyHessian [Yao2020]_.

    Returns
    -------
    Eigenpairs
        ``eigenvalues (k,)`` descending, ``eigenvectors`` (params-shaped, leading ``k``),
        ``residual_norms (k,)``.
    """
    n = _num_params(params)
    steps = _default_steps(n, k) if num_steps is None else int(num_steps)
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        return Eigenpairs(*jit_call(_extreme_impl, loss_fn, params, batches, w, _default_key(key), int(k), steps, True))


def min_eigenpair(
    loss_fn: LossFn,
    params: PyTree,
    *,
    num_steps: int = 80,
    key: Array | None = None,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> Eigenpair:
    """The algebraically smallest Hessian eigenpair by Lanczos (default 80 steps), with its
    residual (the eigenvalue error is at most the residual, about ``residual^2 / gap`` once
    isolated)."""
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        evals, vecs, res = jit_call(_extreme_impl, loss_fn, params, batches, w, _default_key(key), 1, int(num_steps), False)
    return Eigenpair(evals[0], jax.tree.map(lambda x: x[0], vecs), res[0])


def _augmented_impl(loss_fn, params, batches, weights, delta, key, num_steps):
    x0, unravel, g, mv = _bind(loss_fn, params, batches, weights)
    n = x0.shape[0]
    delta = jnp.asarray(delta, x0.dtype)
    amv = ops.augmented(mv)

    def flat_amv(z):
        top, last = amv((z[:n], z[n]), g, delta)
        return jnp.concatenate([top, last[None]])

    z0 = jax.random.normal(key, (n + 1,), x0.dtype)
    evals, vecs, res = eigenpairs(flat_amv, z0, num_steps, 1, largest=False)
    return evals[0], unravel(vecs[0, :n]), vecs[0, n], res[0]


def augmented_min_eigenpair(
    loss_fn: LossFn,
    params: PyTree,
    delta: float,
    *,
    num_steps: int = 100,
    key: Array | None = None,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> AugmentedEigenpair:
    r"""Minimum eigenpair of the augmented Hessian ``[[H, g], [g^T, -delta]]`` by Lanczos.

    By Cauchy interlacing the minimum eigenvalue is at most ``min(lambda_min(H), -delta)``.
    The eigenvector's sign is arbitrary. HSODM (:func:`kan_jax.optim.hsodm`) steps along it.
    """
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        out = jit_call(_augmented_impl, loss_fn, params, batches, w, jnp.asarray(delta), _default_key(key), int(num_steps))
    return AugmentedEigenpair(*out)


# --------------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------------
def _trace_impl(loss_fn, params, batches, weights, key, estimator, num_matvecs, max_probes, min_probes, atol, rtol):
    x0, _, _, mv = _bind(loss_fn, params, batches, weights)
    n, dtype = x0.shape[0], x0.dtype
    if estimator == "hutch++":
        return st.hutch_plus_plus(mv, key, n, num_matvecs, dtype=dtype)
    if num_matvecs is not None:
        return st.hutchinson(mv, key, n, num_matvecs, dtype=dtype)
    return st.hutchinson_adaptive(mv, key, n, max_probes, min_probes, atol, rtol, dtype=dtype)


def hessian_trace(
    loss_fn: LossFn,
    params: PyTree,
    *,
    key: Array | None = None,
    estimator: str = "hutchinson",
    num_matvecs: int | None = None,
    max_probes: int = 100,
    min_probes: int = 10,
    stderr_tol: float | None = None,
    rel_stderr_tol: float | None = 1e-2,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> TraceEstimate:
    r"""Stochastic estimate of ``tr(H)``: Hutchinson or Hutch++.

    * ``estimator="hutchinson"`` [Hutchinson1989]_: ``mean_i z_i^T H z_i`` over Rademacher
      probes. With ``num_matvecs=N``: exactly ``N`` probes. Without: probes one at a time until
      at least ``min_probes`` were used and the standard error is at most
      ``max(stderr_tol, rel_stderr_tol |mean|)``, or ``max_probes``.
    * ``estimator="hutch++"`` [Meyer2021]_: a budget of ``num_matvecs`` (default
      ``max_probes``) HVPs, a third sketching the top of the spectrum exactly; error ``O(1/N)``
      instead of ``O(1/sqrt N)`` when the spectrum decays
      (:func:`kan_jax.curvature.hutch_plus_plus`).

    Returns
    -------
    TraceEstimate
        ``mean``, ``stderr``, ``num_probes`` (HVPs) and the per-probe ``samples``.
    """
    if estimator not in ("hutchinson", "hutch++"):
        raise ValueError(f"estimator must be 'hutchinson' or 'hutch++', got {estimator!r}")
    if estimator == "hutch++" and num_matvecs is None:
        num_matvecs = max_probes
    if num_matvecs is not None and int(num_matvecs) < (3 if estimator == "hutch++" else 1):
        raise ValueError(f"num_matvecs must be at least {3 if estimator == 'hutch++' else 1} for {estimator}, got {num_matvecs}")
    if not 1 <= min_probes <= max_probes:
        raise ValueError(f"need 1 <= min_probes <= max_probes, got min_probes={min_probes}, max_probes={max_probes}")
    batches, w = _prepare(batches, weights)
    atol = 0.0 if stderr_tol is None else float(stderr_tol)
    rtol = 0.0 if rel_stderr_tol is None else float(rel_stderr_tol)
    nm = None if num_matvecs is None else int(num_matvecs)
    with _precision_ctx(precision):
        return jit_call(_trace_impl, loss_fn, params, batches, w, _default_key(key), estimator, nm, int(max_probes), int(min_probes),
                        jnp.asarray(atol), jnp.asarray(rtol))


# --------------------------------------------------------------------------------------------
# Spectral density
# --------------------------------------------------------------------------------------------
def gaussian_density(
    nodes: Array,
    weights: Array,
    *,
    num_points: int = 2000,
    sigma: float | None = None,
    rel_sigma: float = 0.005,
    pad: float = 6.0,
) -> tuple[Array, Array, Array]:
    r"""Smooth SLQ quadrature rules ``(R, m)`` into a density on a uniform grid spanning all
    nodes ``± pad sigma`` (default ``sigma = rel_sigma (max - min)``); returns ``(grid, density,
    sigma)``. See :func:`kan_jax.curvature.gaussian_density`."""
    nodes = jnp.atleast_2d(jnp.asarray(nodes))
    weights = jnp.atleast_2d(jnp.asarray(weights, nodes.dtype))
    return jit_call(st.gaussian_density, nodes, weights, int(num_points), jnp.asarray(0.0 if sigma is None else float(sigma), nodes.dtype),
                    float(rel_sigma), float(pad))


def _slq_impl(loss_fn, params, batches, weights, key, num_runs, num_steps, num_points, sigma, rel_sigma, pad):
    x0, _, _, mv = _bind(loss_fn, params, batches, weights)
    return st.slq(mv, key, x0.shape[0], num_runs, num_steps, dtype=x0.dtype, num_points=num_points,
                  sigma=sigma, rel_sigma=rel_sigma, pad=pad)


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
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    precision: str | None = "highest",
) -> SpectralDensity:
    r"""Hessian eigenvalue density by stochastic Lanczos quadrature [Ubaru2017]_.

    ``num_runs`` Rademacher start vectors, ``num_steps`` Lanczos steps each; the Gauss rules
    (nodes = Ritz values, weights = squared first eigenvector components of ``T``) averaged and
    smoothed by :func:`gaussian_density`. ``sum_i tau_i theta_i`` and ``sum_i tau_i theta_i^2``
    estimate ``tr(H)/n`` and ``||H||_F^2/n`` without bias. Cost: ``R m`` HVPs.
    """
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        return jit_call(_slq_impl, loss_fn, params, batches, w, _default_key(key), int(num_runs), int(num_steps), int(num_points),
                        jnp.asarray(0.0 if sigma is None else float(sigma)), float(rel_sigma), float(pad))
