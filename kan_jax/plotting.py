"""Plots: training curves of the MNIST study and Hessian spectral densities (PyHessian-style ESD plots).

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global
backend state), so the functions are safe in scripts, tests and headless machines.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_spectral_density", "plot_training_curves", "save_spectral_density_pages"]


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
    """Plot an eigenvalue density on a log-scale y axis, like PyHessian's ESD plot.

    Parameters
    ----------
    density : SpectralDensity or (grid, density)
        Output of :func:`kan_jax.hessian.spectral_density` (its ``grid`` and ``density``) or a
        pair of arrays of shape ``(P,)``.
    ax : Axes, optional
        Draw into these axes (several curves on one plot); otherwise a new figure is made.
    path : str or PathLike, optional
        Save the figure there (format from the suffix: ``.png``, ``.pdf``, ``.svg``...).
    title, label : str, optional
    floor : float, optional
        Values below ``floor`` are raised to it so the log axis shows the Gaussian tails down to
        that level; default ``1e-8 * max(density)``.
    figsize : (float, float)
        Size of a new figure in inches.
    **line_kwargs
        Passed to ``Axes.semilogy``.

    Returns
    -------
    Figure
    """
    grid, dens = _grid_density(density)
    if ax is None:
        fig = Figure(figsize=figsize, layout="tight")
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
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    return fig


def save_spectral_density_pages(
    path: str | os.PathLike,
    densities: Iterable[Any],
    titles: Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """Write one ESD plot per page to a multi-page PDF (e.g. the density at each alpha).

    Parameters
    ----------
    path : str or PathLike
        ``.pdf`` destination.
    densities : iterable of SpectralDensity or (grid, density)
    titles : sequence of str, optional
        One per page.
    **kwargs
        Passed to :func:`plot_spectral_density`.

    Returns
    -------
    Path
    """
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(path) as pdf:
        for i, d in enumerate(densities):
            title = titles[i] if titles is not None else None
            pdf.savefig(plot_spectral_density(d, title=title, **kwargs))
    return path


#: Panels of the study figure: (metric key, title), in the published 2x2 order.
_STUDY_PANELS = (
    ("val_acc_batchmean", "validation accuracy"),
    ("val_loss_batchmean", "validation loss"),
    ("train_acc", "training accuracy"),
    ("train_loss", "training loss"),
)


def _hyperparameter_label(algo: str, hp: Mapping[str, Any]) -> str:
    parts = [f"lr={hp['lr']:g}"]
    for key, short in (("gamma", "γ"), ("delta", "δ"), ("weight_decay", "wd")):
        if hp.get(key) is not None:
            parts.append(f"{short}={hp[key]:g}")
    if hp.get("decay") is not None:
        parts.append(f"decay={hp['decay']:g}/epoch")
    return f"{algo} ({', '.join(parts)})"


def plot_training_curves(
    records: Mapping[str, Sequence[Mapping[str, Any]]], path: Union[str, Path], title: Optional[str] = None
) -> Path:
    """The study figure: 2x2 panels (val acc, val loss, train acc, train loss) per epoch.

    Each algorithm is drawn as the mean over its seeds with a ±1 standard-deviation band;
    the legend lists its hyperparameters.

    Parameters
    ----------
    records:
        ``{algo: [run, ...]}`` where a run is a dict with ``"epochs"`` (a list of per-epoch
        metric dicts with the keys of the panels) and ``"hyperparameters"``, as written by
        ``python -m experiments.mnist``.
    path:
        Where to save the PNG.
    title:
        Figure title (default: seeds and number of runs).

    Returns
    -------
    Path
        ``path``.
    """
    fig = Figure(figsize=(12, 8.5), dpi=110)
    axes = fig.subplots(2, 2)
    for algo, runs in records.items():
        epochs = np.array([row["epoch"] for row in runs[0]["epochs"]])
        for ax, (key, name) in zip(axes.flat, _STUDY_PANELS):
            values = np.array([[row[key] for row in run["epochs"]] for run in runs], dtype=float)
            if "acc" in key:
                values = 100 * values
            mean, std = values.mean(0), values.std(0)
            (line,) = ax.plot(epochs, mean, marker="o", ms=3, label=_hyperparameter_label(algo, runs[0]["hyperparameters"]))
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    for ax, (key, name) in zip(axes.flat, _STUDY_PANELS):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if "acc" in key else "cross-entropy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    n_seeds = {len(runs) for runs in records.values()}
    fig.suptitle(title or f"KAN [784, 64, 10] on MNIST: mean ± std over {max(n_seeds, default=0)} seeds")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
