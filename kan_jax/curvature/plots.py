"""Hessian spectral density plots (PyHessian-style ESD plots), one or many per file.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global
backend state), so the functions are safe in scripts, tests and headless machines; files are
written atomically (:mod:`kan_jax.io`). matplotlib comes with ``pip install "kan-jax[interpret]"``
and is imported when a function here is first called.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from kan_jax._optional import require
from kan_jax.io import atomic_write, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_spectral_density", "save_spectral_density_pages"]


def _grid_density(sd: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(sd, "grid") and hasattr(sd, "density"):
        return np.asarray(sd.grid), np.asarray(sd.density)
    grid, density = sd
    return np.asarray(grid), np.asarray(density)


def plot_spectral_density(
    density: Any,
    *,
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    floor: float | None = None,
    label: str | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
    **line_kwargs: Any,
) -> Figure:
    """Plot an eigenvalue density on a log-scale y axis.

    Args:
        density: A :class:`~kan_jax.curvature.SpectralDensity` (its ``grid`` and ``density``)
            or a pair of ``(P,)`` arrays ``(grid, density)``.
        ax: Draw into these axes (several curves on one plot); otherwise a new figure.
        path: Save the figure there (format from the suffix: ``.png``, ``.pdf``, ``.svg``).
        title: Axes title.
        floor: Values below are raised to it so the log axis shows the Gaussian tails down to
            that level; default ``1e-8 * max(density)``.
        label: Legend label of the curve.
        figsize: Size of a new figure in inches.
        **line_kwargs: Passed to ``Axes.semilogy``.

    Returns:
        The figure.
    """
    grid, dens = _grid_density(density)
    if ax is None:
        fig = require("matplotlib.figure", "interpret").Figure(figsize=figsize, layout="tight")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    top = float(np.max(dens)) if dens.size else 1.0
    lo = floor if floor is not None else 1e-8 * (top if top > 0 else 1.0)
    ax.semilogy(grid, np.maximum(dens, lo), label=label, **line_kwargs)
    ax.set_xlabel("Eigenvalue")
    ax.set_ylabel("Density (log scale)")
    ax.set_ylim(bottom=lo)
    if title is not None:
        ax.set_title(title)
    if label is not None:
        ax.legend()
    if path is not None:
        save_figure(fig, path, dpi=150)
    return fig


def save_spectral_density_pages(
    path: str | os.PathLike,
    densities: Iterable[Any],
    titles: Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """Write one ESD plot per page to a multi-page PDF (e.g. the density at each alpha).

    Args:
        path: ``.pdf`` destination.
        densities: :class:`~kan_jax.curvature.SpectralDensity` or ``(grid, density)`` pairs.
        titles: One per page.
        **kwargs: Passed to :func:`plot_spectral_density`.

    Returns:
        The path written.
    """
    pdf_pages = require("matplotlib.backends.backend_pdf", "interpret").PdfPages

    def write(tmp: Path) -> None:
        with pdf_pages(tmp) as pdf:
            for i, d in enumerate(densities):
                pdf.savefig(plot_spectral_density(d, title=None if titles is None else titles[i], **kwargs))

    return atomic_write(path, write)
