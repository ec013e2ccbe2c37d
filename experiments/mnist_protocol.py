"""The MNIST study's protocol: its optimisers (the published table) and its figure.

The library (:mod:`kan_jax.training.epoch`) provides the generic compiled epoch and evaluation;
this module holds what is particular to the δ-GClip KAN study on MNIST (Tucat et al., TMLR 2025,
arXiv 2404.08624): :data:`ALGORITHMS` with their published hyperparameters,
:func:`make_optimizer` turning one into optax, and :func:`plot_training_curves`, the 2x2 figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import numpy as np
import optax

from kan_jax.io import save_figure
from kan_jax.optim import dgclip

__all__ = ["ALGORITHMS", "HYPERPARAMETERS", "hyperparameters", "make_optimizer", "plot_training_curves"]

#: Names of the hyperparameters an algorithm may have (the flags ``--<algo>-<name>``).
HYPERPARAMETERS = ("lr", "weight_decay", "gamma", "delta", "decay")

#: The published protocol's optimisers (Tucat et al., TMLR 2025, MNIST KAN study), as optax.
#: ``decay``: ExponentialLR(0.8) stepped once per epoch (adamw, adam, gd only).
ALGORITHMS: dict[str, dict[str, Any]] = {
    "adamw": dict(lr=1e-3, weight_decay=1e-4, decay=0.8),
    "adam": dict(lr=1e-3, weight_decay=1e-4, decay=0.8),
    "dgclip": dict(lr=1.0, weight_decay=1e-4, gamma=0.5, delta=0.5, decay=None),
    "gclip": dict(lr=1.0, weight_decay=1e-4, gamma=0.5, delta=0.0, decay=None),
    "gd": dict(lr=0.1, weight_decay=1e-4, decay=0.8),
}


def make_optimizer(
    algo: str, steps_per_epoch: int, **overrides: Any
) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
    """The optax optimiser of one algorithm of the study and its learning-rate schedule.

    | algo | PyTorch (published) | optax |
    |---|---|---|
    | adamw | AdamW(1e-3, wd=1e-4) | ``adamw(sched, weight_decay=wd)`` (decoupled) |
    | adam | Adam(1e-3, wd=1e-4) | ``chain(add_decayed_weights(wd), adam(sched))`` |
    | dgclip | δ-GClip(1, γ=0.5, δ=0.5, wd=1e-4) | :func:`kan_jax.optim.dgclip` |
    | gclip | δ-GClip(1, γ=0.5, δ=0, wd=1e-4) | :func:`kan_jax.optim.dgclip` with ``delta=0`` |
    | gd | SGD(0.1, wd=1e-4) | ``chain(add_decayed_weights(wd), sgd(sched))`` |

    ``sched`` is ExponentialLR(``decay``) stepped once per epoch:
    ``exponential_decay(lr, steps_per_epoch, decay, staircase=True)``; ``decay=None`` keeps
    the rate constant (the clipping methods).

    Args:
        algo: one of :data:`ALGORITHMS`.
        steps_per_epoch: optimiser steps per epoch (for the per-epoch schedule).
        **overrides: replace any of ``lr``, ``weight_decay``, ``gamma``, ``delta``, ``decay``
            (``None`` keeps the default; ``decay=1`` turns the schedule off).

    Returns:
        ``(tx, schedule)``: the transformation and ``schedule(step) -> learning rate``.

    Raises:
        ValueError: an unknown algorithm or hyperparameter, or a value out of range.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; expected one of {sorted(ALGORITHMS)}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    hp = dict(ALGORITHMS[algo])
    unknown = set(overrides) - set(hp) - {"gamma", "delta"}
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)} for {algo!r}; expected {sorted(hp)}")
    hp.update({k: v for k, v in overrides.items() if v is not None})  # None: keep the default
    if not hp["lr"] > 0:
        raise ValueError(f"learning rate must be > 0, got {hp['lr']}")
    if hp["weight_decay"] < 0:
        raise ValueError(f"weight_decay must be >= 0, got {hp['weight_decay']}")
    decay = hp.get("decay")
    if decay is None:
        schedule = optax.constant_schedule(hp["lr"])
    else:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        schedule = optax.exponential_decay(hp["lr"], steps_per_epoch, decay, staircase=True)
    wd = hp["weight_decay"]
    if algo == "adamw":
        tx = optax.adamw(schedule, weight_decay=wd)
    elif algo == "adam":
        tx = optax.chain(optax.add_decayed_weights(wd), optax.adam(schedule))
    elif algo == "gd":
        tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(schedule))
    else:
        tx = dgclip(schedule, gamma=hp["gamma"], delta=hp["delta"], weight_decay=wd)
    return tx, schedule


def hyperparameters(algo: str, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The published hyperparameters of ``algo`` with the user's overrides applied (``None``: keep)."""
    hp = dict(ALGORITHMS[algo])
    hp.update({k: v for k, v in overrides.get(algo, {}).items() if v is not None})
    return hp


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
    records: Mapping[str, Sequence[Mapping[str, Any]]], path: Union[str, Path], title: Optional[str] = None,
    model: str = "KAN [784, 64, 10]",
) -> Path:
    """The study figure: 2x2 panels (val acc, val loss, train acc, train loss) per epoch.

    Each algorithm is drawn as the mean over its seeds with a ±1 standard-deviation band;
    the legend lists its hyperparameters.

    Args:
        records: ``{algo: [run, ...]}`` where a run is a dict with ``"epochs"`` (a list of
            per-epoch metric dicts with the keys of the panels) and ``"hyperparameters"``, as
            written by ``python -m experiments.mnist``.
        path: where to save the PNG.
        title: the figure's title (default: ``model``, the seeds and the number of runs).
        model: the model's name in the default title.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

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
    fig.suptitle(title or f"{model} on MNIST: mean ± std over {max(n_seeds, default=0)} seeds")
    fig.tight_layout()
    return save_figure(fig, path)
