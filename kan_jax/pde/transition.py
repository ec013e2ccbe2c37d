r"""Optimiser state across a grid extension: moments resampled onto the finer coefficient axis.

After :func:`kan_jax.layer.refine` a layer's ``spline_weight`` has more coefficients per edge,
``(in, G + k, out) -> (in, G' + k, out)``. A fresh optimiser state for them (zero moments, the
step count kept) makes Adam's first updates of every new coefficient about ``lr / sqrt(1 − β₂^t)
· (1 − β₁) / (1 − β₁^t)``-sized sign steps, and the loss jumps. The adaptive state transition of
adaptive physics-informed KANs instead carries the moments over: coefficient ``j`` of ``n``
sits at the relative position ``j / (n − 1)`` of its edge's grid, so a moment array ``m`` of
the old size is resampled at the new positions by linear interpolation,

.. math::
    m'_i = (1 − w)\, m_{\lfloor s \rfloor} + w\, m_{\lfloor s \rfloor + 1}, \qquad
    s = i \frac{n − 1}{n' − 1}, \; w = s − \lfloor s \rfloor ,

along every axis whose size changed. Weights are non-negative, so second moments stay
non-negative; leaves whose shape did not change (moments of ``base_weight`` and
``spline_scaler``, step counts) are carried exactly, as by :func:`kan_jax.layer.refine_opt_state`.

References:
  S. Rigas, M. Papachristou, T. Papadopoulos, F. Anagnostopoulos, G. Alexandridis, "Adaptive
  training of grid-dependent physics-informed Kolmogorov-Arnold networks", IEEE Access 12
  (2024).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["interpolation_matrix", "resample_moments", "transition_opt_state"]


def interpolation_matrix(old_size: int, new_size: int) -> np.ndarray:
    """The ``(new_size, old_size)`` matrix of linear interpolation between relative positions.

    Row ``i`` holds the weights of sample ``i`` at position ``i / (new_size − 1)`` on the old
    samples at ``j / (old_size − 1)``; rows sum to one, the end points map to the end points.

    Args:
      old_size: Samples before, ``>= 1``.
      new_size: Samples after, ``>= 1``.

    Returns:
      A float64 NumPy array.

    Example:
      >>> from kan_jax.pde import interpolation_matrix
      >>> interpolation_matrix(2, 3).tolist()
      [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    for name, n in (("old_size", old_size), ("new_size", new_size)):
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    old_size, new_size = int(old_size), int(new_size)
    if old_size == 1:
        return np.ones((new_size, 1))
    s = np.linspace(0.0, old_size - 1.0, new_size) if new_size > 1 else np.zeros(1)
    lo = np.minimum(np.floor(s).astype(int), old_size - 2)
    w = s - lo
    m = np.zeros((new_size, old_size))
    m[np.arange(new_size), lo] = 1 - w
    m[np.arange(new_size), lo + 1] += w
    return m


def resample_moments(moment: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``moment`` linearly resampled to ``shape`` along each axis whose size differs.

    Args:
      moment: An array of the old shape.
      shape: The new shape, of the same rank.

    Returns:
      The resampled array, ``shape``, in the dtype of ``moment``.

    Raises:
      ValueError: If the ranks differ.
    """
    moment = jnp.asarray(moment)
    shape = tuple(int(n) for n in shape)
    if moment.ndim != len(shape):
        raise ValueError(f"shape must have the rank of moment ({moment.ndim}), got {shape} for {moment.shape}")
    out = moment
    for axis, (old, new) in enumerate(zip(moment.shape, shape)):
        if old != new:
            m = jnp.asarray(interpolation_matrix(old, new), moment.dtype)
            out = jnp.moveaxis(jnp.tensordot(m, out, axes=(1, axis)), 0, axis)
    return out


def transition_opt_state(opt_state: Any, tx: optax.GradientTransformation, new_params: Any) -> Any:
    """Carry an optax state across :func:`kan_jax.layer.refine`, resampling the changed moments.

    Every leaf of ``tx.init(new_params)`` takes the corresponding leaf of ``opt_state``:
    unchanged when its shape and dtype are the same, :func:`resample_moments` of it when only
    its sizes differ. This suits transformations whose state mirrors the parameters leaf by
    leaf (Adam, AdamW, RMSProp, momentum, with or without schedules).

    Args:
      opt_state: The state for the parameters before :func:`~kan_jax.layer.refine`.
      tx: The transformation.
      new_params: The parameters after it.

    Returns:
      The state for ``new_params``.

    Raises:
      ValueError: If ``opt_state`` does not have the structure of ``tx.init(new_params)`` or a
        leaf changed rank or dtype.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from kan_jax.pde import transition_opt_state
      >>> tx = optax.adam(1e-3)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> state = tx.update({"w": jnp.array([1.0, 3.0])}, state)[1]
      >>> [round(float(m), 6) for m in transition_opt_state(state, tx, {"w": jnp.zeros(3)})[0].mu["w"]]
      [0.1, 0.2, 0.3]
    """
    fresh = tx.init(new_params)
    old_leaves, old_def = jax.tree.flatten(opt_state)
    new_leaves, new_def = jax.tree.flatten(fresh)
    if old_def != new_def:
        raise ValueError(f"opt_state does not have the structure of tx.init(new_params): {old_def} vs {new_def}")

    def carry(old: Any, new: Any) -> Any:
        old_shape, new_shape = jnp.shape(old), jnp.shape(new)
        old_dtype, new_dtype = jnp.result_type(old), jnp.result_type(new)
        if old_dtype != new_dtype or len(old_shape) != len(new_shape):
            raise ValueError(f"a state leaf changed dtype or rank: {old_dtype}{old_shape} -> {new_dtype}{new_shape}")
        return old if old_shape == new_shape else resample_moments(old, new_shape)

    return jax.tree.unflatten(new_def, [carry(o, n) for o, n in zip(old_leaves, new_leaves)])
