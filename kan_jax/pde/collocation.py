r"""Collocation points: quasi-random and regular samples of a box, and residual-based resampling.

A physics-informed loss is evaluated at collocation points of the domain
``[lo_1, hi_1] × ... × [lo_d, hi_d]``. :func:`sobol_points` draws a scrambled Sobol sequence
(low discrepancy, scipy's ``scipy.stats.qmc``), :func:`grid_points` the tensor grid, and
:func:`resample` draws a new set from candidates with probability growing with the residual,

.. math::
    p_i \propto \frac{|r_i|^k}{\operatorname{mean}_j |r_j|^k} + c ,

so that points move to where the equation is violated most while ``c > 0`` keeps every region
covered.

References:
  C. Wu, M. Zhu, Q. Tan, Y. Kartha, L. Lu, "A comprehensive study of non-adaptive and
  residual-based adaptive sampling for physics-informed neural networks", Comput. Methods
  Appl. Mech. Eng. 403 (2023).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax._optional import require

__all__ = ["grid_points", "resample", "resampling_probabilities", "sobol_points"]

Bounds = Sequence[tuple[float, float]]


def _bounds(bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(bounds, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ValueError(f"bounds must be a sequence of (lo, hi) pairs, one per coordinate, got {bounds!r}")
    if not np.all(np.isfinite(b)) or not np.all(b[:, 0] < b[:, 1]):
        raise ValueError(f"every bound needs finite lo < hi, got {bounds!r}")
    return b[:, 0], b[:, 1]


def sobol_points(num: int, bounds: Bounds, *, seed: int = 0, dtype: np.dtype = np.float32) -> np.ndarray:
    """``num`` points of a scrambled Sobol sequence in the box ``bounds``.

    Args:
      num: Number of points (a power of two keeps the sequence balanced).
      bounds: ``[(lo, hi), ...]``, one pair per coordinate.
      seed: Seed of the scrambling.
      dtype: Dtype of the result.

    Returns:
      Points, ``(num, len(bounds))``, inside the box.

    Raises:
      ValueError: If ``num < 1`` or a bound is not a finite ``lo < hi``.
      ImportError: If scipy is missing (it comes with the ``pde`` extra).

    Example:
      >>> from kan_jax.pde import sobol_points
      >>> sobol_points(8, [(0.0, 1.0), (-1.0, 1.0)]).shape
      (8, 2)
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    lo, hi = _bounds(bounds)
    qmc = require("scipy.stats.qmc", "pde")
    unit = qmc.Sobol(d=lo.shape[0], scramble=True, seed=seed).random(int(num))
    return (lo + unit * (hi - lo)).astype(dtype)


def grid_points(bounds: Bounds, counts: Sequence[int], *, dtype: np.dtype = np.float32) -> np.ndarray:
    """The tensor grid of ``counts[c]`` equispaced values (ends included) per coordinate.

    Args:
      bounds: ``[(lo, hi), ...]``, one pair per coordinate.
      counts: Values per coordinate, each ``>= 1`` (``1`` gives ``lo``: a boundary segment).

    Returns:
      Points, ``(prod(counts), len(bounds))``, the last coordinate varying fastest.

    Raises:
      ValueError: If the lengths differ, a count is below 1 or a bound is not ``lo < hi``.
    """
    lo, hi = _bounds(bounds)
    counts = tuple(counts)
    if len(counts) != lo.shape[0] or any(isinstance(c, bool) or int(c) != c or c < 1 for c in counts):
        raise ValueError(f"counts must hold one int >= 1 per coordinate ({lo.shape[0]}), got {counts!r}")
    axes = [np.linspace(a, b, int(n)) if n > 1 else np.array([a]) for a, b, n in zip(lo, hi, counts)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes)).astype(dtype)


def resampling_probabilities(residuals: jax.Array, exponent: float = 1.0, offset: float = 1.0) -> jax.Array:
    r"""``p_i ∝ |r_i|^k / mean_j |r_j|^k + c``, normalised to sum to one.

    Args:
      residuals: Residuals at the candidates, ``(N,)`` (or ``(N, 1)``).
      exponent: ``k >= 0``.
      offset: ``c >= 0``; with every residual zero the distribution is uniform.

    Returns:
      Probabilities, ``(N,)``.
    """
    if not exponent >= 0 or not offset >= 0:
        raise ValueError(f"exponent and offset must be >= 0, got {exponent!r} and {offset!r}")
    r = jnp.abs(jnp.reshape(residuals, (residuals.shape[0], -1))).max(axis=1) ** exponent
    mean = jnp.mean(r)
    w = jnp.where(mean > 0, r / jnp.where(mean > 0, mean, 1), 0.0) + offset
    total = jnp.sum(w)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1), 1.0 / r.shape[0])


def resample(
    key: jax.Array,
    candidates: jax.Array,
    residuals: jax.Array,
    num: int,
    exponent: float = 1.0,
    offset: float = 1.0,
) -> jax.Array:
    """Draw ``num`` distinct candidates with :func:`resampling_probabilities`.

    Args:
      key: A PRNG key.
      candidates: Candidate points, ``(N, d)``.
      residuals: Residuals at the candidates, ``(N,)``.
      num: Points drawn without replacement, ``1 <= num <= N``.
      exponent: ``k`` of the probabilities.
      offset: ``c`` of the probabilities.

    Returns:
      The drawn points, ``(num, d)``.

    Raises:
      ValueError: If the shapes disagree or ``num`` is out of range.
    """
    n = candidates.shape[0]
    if residuals.shape[0] != n:
        raise ValueError(f"residuals must have one row per candidate ({n}), got shape {tuple(residuals.shape)}")
    if not 1 <= num <= n:
        raise ValueError(f"num must be in [1, {n}] (the number of candidates), got {num}")
    p = resampling_probabilities(residuals, exponent, offset)
    index = jax.random.choice(key, n, (num,), replace=False, p=p)
    return candidates[index]
