"""The crossovers behind ``"auto"``'s thresholds on this backend, measured in one run.

:mod:`kan_jax.layer.config` chooses a layer's spline strategy by a backend's
:class:`~kan_jax.layer.StrategyThresholds` (``DEFAULT_STRATEGY_THRESHOLDS``). This script takes
the measurements behind its two fields on whatever backend JAX runs on (one command, a few
minutes) and prints the values they suggest; every variant is passed to the layers explicitly
(their ``spline_strategy`` field):

* ``dense_max_bases_per_window``: one Adam step inside a compiled ``lax.scan``
  (:func:`benchmarks.spline_scaling.jax_step_timings`) with ``"dense"`` and ``"local"`` at each
  G of ``--grid-sizes``, for the study's [784, 64, 10] at batch 64 and FlashKAN's [784, 10] at
  batch 200. The suggested factor is ``(G + k) / (k + 1)`` at the largest G below which dense
  is faster on the study's shape (the rule is ``dense while G + k <= factor * (k + 1)``).
* ``unrolled_max_bases``: a training epoch as the study runs it
  (:func:`benchmarks.epoch_strategies.epoch_timing`, batches gathered inside the scan) with
  ``"unrolled"`` and ``"dense"`` at each G of ``--small-grid-sizes``; suggested: the largest
  ``G + k`` up to which unrolled is faster and compiles in at most ``--max-compile-s``.

The tables go to ``benchmarks/RESULTS.md`` between the markers ``crossover <backend>``.

Usage::

    python -m benchmarks.crossover                       # the full sweep
    python -m benchmarks.crossover --grid-sizes 20 100 --small-grid-sizes 5 --no-write
"""
from __future__ import annotations

import argparse
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.epoch_strategies import epoch_timing
from benchmarks.mnist_study import machine_name
from benchmarks.spline_scaling import jax_step_timings, write_section
from kan_jax.layer import default_thresholds

K = 3  # spline order of every measurement


def _step_ms(widths: list[int], grid_size: int, strategy: str, batch: int, args: argparse.Namespace) -> float:
    return jax_step_timings(widths, grid_size, strategy, batch, args.scan_steps, args.repeats, init_repeats=1)["step_ms"]


def dense_local_table(args: argparse.Namespace) -> tuple[str, float]:
    """Dense and local step times per G for both shapes, and the suggested window factor."""
    shapes = [([784, 64, 10], 64), ([784, 10], 200)]
    lines = [
        "| G | [784, 64, 10] b64 dense (ms) | local (ms) | [784, 10] b200 dense (ms) | local (ms) |",
        "|---|---|---|---|---|",
    ]
    factor, contiguous = 0.0, True  # dense faster on the study's shape at every G so far
    for g in sorted(args.grid_sizes):
        times = [[_step_ms(widths, g, s, batch, args) for s in ("dense", "local")] for widths, batch in shapes]
        lines.append(f"| {g} | " + " | ".join(f"{t:.2f}" for pair in times for t in pair) + " |")
        print(lines[-1], flush=True)
        contiguous &= times[0][0] <= times[0][1]
        if contiguous:
            factor = (g + K) / (K + 1)
    return "\n".join(lines), factor


def unrolled_table(args: argparse.Namespace) -> tuple[str, int]:
    """Epoch and compile times of unrolled and dense at small G, and the suggested cap on G + k."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (args.samples, 784)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.samples).astype(np.int32))
    lines = [
        "| G | unrolled epoch (s) | unrolled compile (s) | dense epoch (s) | dense compile (s) |",
        "|---|---|---|---|---|",
    ]
    cap, contiguous = 0, True  # unrolled faster, and compiled within budget, at every G so far
    for g in sorted(args.small_grid_sizes):
        (uc, ue), (dc, de) = (epoch_timing(g, s, x, y, repeats=args.repeats) for s in ("unrolled", "dense"))
        lines.append(f"| {g} | {ue:.3f} | {uc:.2f} | {de:.3f} | {dc:.2f} |")
        print(lines[-1], flush=True)
        contiguous &= ue < de and uc <= args.max_compile_s
        if contiguous:
            cap = g + K
    return "\n".join(lines), cap


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-sizes", type=int, nargs="+", default=[10, 20, 50, 100, 150, 200, 300, 500, 1000])
    parser.add_argument("--small-grid-sizes", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--samples", type=int, default=60000, help="training inputs of the unrolled/dense epoch")
    parser.add_argument("--max-compile-s", type=float, default=2.5, help="compile budget of the unrolled bases")
    parser.add_argument("--scan-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    print(f"Machine: {machine_name()}; backend {backend}; k = {K}.\n", flush=True)
    dense_local, factor = dense_local_table(args)
    unrolled, cap = unrolled_table(args)
    rule = default_thresholds(backend)
    current = (rule.dense_max_bases_per_window, rule.unrolled_max_bases)
    text = "\n".join([
        f"## Strategy crossovers on {backend} (`python -m benchmarks.crossover`)\n",
        f"Machine: {machine_name()}. One Adam step inside a compiled scan of {args.scan_steps} steps, best of "
        f"{args.repeats}, k = {K}; the unrolled/dense rows are whole training epochs as the study runs them.\n",
        "Dense against local (`dense_max_bases_per_window`):\n",
        dense_local,
        f"\nUnrolled against dense bases at small G (`unrolled_max_bases`), [784, 64, 10], {args.samples} "
        "inputs gathered in batches of 64:\n",
        unrolled,
        f"\nSuggested for `{backend}`: dense_max_bases_per_window {factor:g} (now {current[0]}), "
        f"unrolled_max_bases {cap} (now {current[1]}).",
    ])
    print(text)
    if not args.no_write:
        write_section(f"crossover {backend}", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
