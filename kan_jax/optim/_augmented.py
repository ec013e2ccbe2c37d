r"""The step that HSODM and SFN share: the leftmost eigenpair of the aggregated matrix and its direction.

Given a Hessian-vector product ``hvp`` and a gradient ``g``, :func:`leftmost_direction` runs
Lanczos on the matrix-free operator ``(v, t) -> (H v + t g, g^T v - delta t)`` from the warm
start held in the optimiser's state, takes the leftmost Ritz pair ``(theta, (v, t))`` and
returns the direction ``d = v / t`` (``|t| >= nu``) or ``v``, turned downhill
(``g^T d <= 0``) and optionally capped at ``||d|| <= radius``, with the new state fields.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from kan_jax.curvature.krylov import LanczosResult, tridiagonal_eigh

__all__ = ["AugmentedState", "check_arguments", "initial_fields", "leftmost_direction"]


class AugmentedState(NamedTuple):
    """The fields of HSODM's and SFN's states (each state class documents them)."""

    count: jax.Array
    vector: optax.Params
    scalar: jax.Array
    eigenvalue: jax.Array
    residual: jax.Array
    used_newton: jax.Array
    num_matvecs: jax.Array


def check_arguments(delta: Any, nu: Any, radius: Any, num_lanczos_steps: Any) -> None:
    """Raise ``ValueError`` naming the argument, the range expected and the value given."""
    if isinstance(delta, (int, float)) and not delta >= 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if isinstance(nu, (int, float)) and not 0 < nu < 0.5:
        raise ValueError(f"nu must be in (0, 1/2) as in the paper, got {nu}")
    if radius is not None and isinstance(radius, (int, float)) and not radius > 0:
        raise ValueError(f"radius must be > 0 or None, got {radius}")
    if not isinstance(num_lanczos_steps, int) or num_lanczos_steps < 2:
        raise ValueError(f"num_lanczos_steps must be an int >= 2, got {num_lanczos_steps!r}")


def initial_fields(params: optax.Params) -> dict[str, Any]:
    """The fields of a fresh state: no step yet, the warm start ``(0, 1)``."""
    x0, unravel = ravel_pytree(params)
    zero = jnp.zeros([], x0.dtype)
    return dict(count=jnp.zeros([], jnp.int32), vector=unravel(jnp.zeros_like(x0)), scalar=jnp.ones([], x0.dtype),
                eigenvalue=zero, residual=zero, used_newton=jnp.zeros([], bool), num_matvecs=jnp.zeros([], jnp.int32))


def leftmost_direction(
    hvp: Callable[[jax.Array], jax.Array],
    updates: optax.Updates,
    params: optax.Params,
    state: Any,
    *,
    delta: Any,
    nu: Any,
    radius: Optional[Any],
    run_lanczos: Callable[..., LanczosResult],
) -> tuple[optax.Updates, dict[str, Any]]:
    """The direction from the leftmost eigenvector of ``[[H, g], [g^T, -delta]]``.

    Args:
        hvp: ``H v`` on flat ``(n,)`` vectors in :func:`jax.flatten_util.ravel_pytree` order.
        updates: The gradient ``g`` (params-shaped).
        params: The point (its dtype and structure are those of the direction).
        state: The previous state: ``vector`` and ``scalar`` (the warm start), ``count`` and
            ``num_matvecs``.
        delta: ``delta`` of the aggregated matrix.
        nu: Threshold on ``|t|``.
        radius: Optional cap on ``||d||``.
        run_lanczos: :func:`kan_jax.curvature.lanczos` built from its number of steps.

    Returns:
        ``(d, fields)``: the params-shaped direction and the new state's fields by name.
    """
    x0, unravel = ravel_pytree(params)
    dtype, n = x0.dtype, x0.shape[0]
    g = ravel_pytree(updates)[0].astype(dtype)
    dlt = jnp.asarray(delta, dtype)

    def amv(z):
        v, t = z[:n], z[n]
        return jnp.concatenate([hvp(v) + t * g, (jnp.vdot(g, v) - dlt * t)[None]])

    z0 = jnp.concatenate([ravel_pytree(state.vector)[0].astype(dtype), state.scalar.astype(dtype)[None]])
    res = run_lanczos(amv, z0)
    theta, s = tridiagonal_eigh(res.alphas, res.betas)
    z = s[:, 0] @ res.basis
    z = z / jnp.linalg.norm(z)
    v, t = z[:n], z[n]
    big_t = jnp.abs(t) >= nu
    d = jnp.where(big_t, v / jnp.where(big_t, t, 1), v)
    d = jnp.where(jnp.vdot(g, d) > 0, -d, d)
    if radius is not None:
        dn = jnp.linalg.norm(d)
        d = d * jnp.minimum(1, jnp.asarray(radius, dtype) / jnp.where(dn > 0, dn, 1))
    fields = dict(count=optax.safe_increment(state.count), vector=unravel(v), scalar=t, eigenvalue=theta[0],
                  residual=jnp.abs(res.residual_norm * s[-1, 0]), used_newton=big_t,
                  num_matvecs=state.num_matvecs + res.alphas.shape[0])
    return unravel(d), fields
