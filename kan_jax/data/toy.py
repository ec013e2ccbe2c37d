"""Toy regression datasets: pykan's ``create_dataset`` (``y = f(x)``, ``x`` uniform on a box)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["create_dataset"]

def _as_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def create_dataset(
    f: Callable[[np.ndarray], Any],
    n_var: int = 2,
    ranges: Sequence[float] | Sequence[Sequence[float]] | np.ndarray = (-1, 1),
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    normalize_input: bool = False,
    normalize_label: bool = False,
) -> dict[str, np.ndarray]:
    """Sample a regression dataset ``y = f(x)`` with ``x`` uniform on a box (as pykan's).

    Args:
        f: Maps inputs of shape ``(N, n_var)`` (a float32 NumPy array; NumPy or ``jax.numpy``
            code both work) to labels of shape ``(N, n_out)`` or ``(N,)`` (taken as
            ``n_out = 1``), e.g. ``lambda x: jnp.exp(jnp.sin(jnp.pi * x[:, [0]]) + x[:, [1]] ** 2)``.
        n_var: Number of input variables.
        ranges: ``(lo, hi)`` for every variable, or one pair per variable.
        train_num: Number of training points.
        test_num: Number of test points.
        seed: Seed of the NumPy generator: the same seed gives the same data. Training inputs
            are drawn before test inputs.
        normalize_input: Standardize the inputs per column with the *training* mean and
            standard deviation (applied to both sets, as pykan does); the statistics are
            returned too.
        normalize_label: The same for the labels.

    Returns:
        ``train_input (train_num, n_var)``, ``train_label (train_num, n_out)``,
        ``test_input (test_num, n_var)``, ``test_label (test_num, n_out)``, float32 NumPy
        arrays; plus ``input_mean``/``input_std`` (``(1, n_var)``) and/or
        ``label_mean``/``label_std`` (``(1, n_out)``) when normalizing.

    Raises:
        ValueError: for a non-positive ``n_var``/``train_num``/``test_num``, malformed or empty
            ranges, labels of the wrong shape, non-finite labels, or a constant column to
            normalize.
        TypeError: if ``f`` is not callable.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    n_var = _as_positive_int(n_var, "n_var")
    train_num = _as_positive_int(train_num, "train_num")
    test_num = _as_positive_int(test_num, "test_num")
    try:
        r = np.asarray(ranges, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"ranges must be a pair (lo, hi) or {n_var} such pairs, got {ranges!r}") from err
    if r.shape == (2,):
        r = np.broadcast_to(r, (n_var, 2))
    elif r.shape != (n_var, 2):
        raise ValueError(
            f"ranges must have shape (2,) or (n_var, 2) = ({n_var}, 2), got shape {r.shape}"
        )
    if not np.all(np.isfinite(r)) or np.any(r[:, 0] >= r[:, 1]):
        raise ValueError(f"every range must be finite with lo < hi, got {r.tolist()}")

    rng = np.random.default_rng(seed)
    lo, hi = r[:, 0], r[:, 1]

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = (lo + (hi - lo) * rng.random((n, n_var))).astype(np.float32)
        y = np.asarray(f(x))
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(
                f"f must map inputs of shape ({n}, {n_var}) to labels of shape ({n}, n_out) or "
                f"({n},), got shape {y.shape}"
            )
        if y.ndim == 1:
            y = y[:, None]
        y = y.astype(np.float32)
        if not np.all(np.isfinite(y)):
            raise ValueError(
                f"f returned {int(np.sum(~np.isfinite(y)))} non-finite labels on the ranges {r.tolist()}"
            )
        return x, y

    train_input, train_label = sample(train_num)
    test_input, test_label = sample(test_num)
    out = {
        "train_input": train_input,
        "train_label": train_label,
        "test_input": test_input,
        "test_label": test_label,
    }

    def standardize(kind: str) -> None:
        train = out[f"train_{kind}"]
        mean = train.mean(axis=0, keepdims=True, dtype=np.float64)
        std = train.std(axis=0, keepdims=True, dtype=np.float64)
        if np.any(std == 0):
            raise ValueError(f"cannot normalize {kind}: column(s) {np.flatnonzero(std[0] == 0).tolist()} are constant")
        for split in ("train", "test"):
            out[f"{split}_{kind}"] = ((out[f"{split}_{kind}"] - mean) / std).astype(np.float32)
        out[f"{kind}_mean"] = mean.astype(np.float32)
        out[f"{kind}_std"] = std.astype(np.float32)

    if normalize_input:
        standardize("input")
    if normalize_label:
        standardize("label")
    return out
