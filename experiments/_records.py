"""What the studies' records share: JSON-safe numbers and timed phases.

Example:
    >>> from experiments._records import num, nums
    >>> num(float("nan")) is None, nums([1.0, float("inf")])
    (True, [1.0, None])
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

__all__ = ["num", "nums", "Timer"]


def num(x: Any) -> Optional[float]:
    """``x`` as a JSON-safe float: ``None`` for NaN and infinities."""
    x = float(x)
    return x if math.isfinite(x) else None


def nums(xs: Any) -> list[Optional[float]]:
    """Every element of ``xs`` (flattened) through :func:`num`."""
    return [num(x) for x in np.asarray(xs).reshape(-1)]


class Timer:
    """Wall-clock seconds of named phases; results are blocked on before the clock stops.

    Args:
        log: called with one line per finished phase.
    """

    def __init__(self, log: Callable[[str], None]):
        self.seconds: dict[str, float] = {}
        self._log = log

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn()``, record its seconds under ``name`` and return its result."""
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        self.seconds[name] = time.perf_counter() - t
        self._log(f"{name}: {self.seconds[name]:.2f} s")
        return out
