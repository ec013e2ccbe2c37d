"""What both parts of the landscape study share: figure sizes and sign thresholds of spectra."""
from __future__ import annotations

from typing import Any

import numpy as np

#: Figure sizes (inches) and resolution of the PNGs written by the study.
INTERPOLATION_FIGSIZE = (7.0, 4.5)
DENSITY_FIGSIZE = (6.0, 4.0)
DPI = 150

#: Number of top eigenvalues compared with the exact spectrum.
TOP_K = 5


def flag(name: str) -> str:
    """The command-line spelling of a field name (``lbfgs_steps`` -> ``lbfgs-steps``)."""
    return name.replace("_", "-")


def negative_threshold(values: Any, dtype: Any) -> float:
    """``sqrt(eps) * max|values|`` for ``dtype``: eigenvalues (or SLQ nodes) below minus this count
    as negative.

    Flat directions come out at rounding level, e.g. the null space of an MLP Hessian as one SLQ
    node near -4e-8 ||H|| in float32, and their sign means nothing.
    """
    return float(np.sqrt(np.finfo(dtype).eps) * np.max(np.abs(np.asarray(values, np.float64))))


def negative_fraction(eigenvalues: Any, dtype: Any) -> float:
    """Fraction of ``eigenvalues`` below ``-negative_threshold``."""
    ev = np.asarray(eigenvalues, np.float64)
    return float(np.mean(ev < -negative_threshold(ev, dtype)))


def negative_mass(nodes: Any, weights: Any, dtype: Any) -> float:
    """SLQ estimate of the fraction of negative eigenvalues: the weight on nodes below
    ``-negative_threshold``, averaged over runs."""
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    return float(np.mean(np.sum(weights * (nodes < -negative_threshold(nodes, dtype)), axis=1)))


def relative_error(approx: Any, exact: Any) -> Any:
    """``|approx - exact| / |exact|`` elementwise, in float64."""
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return np.abs(approx - exact) / np.maximum(np.abs(exact), np.finfo(np.float64).tiny)
