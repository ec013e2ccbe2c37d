"""Cost of a KAN training step as the grid grows: dense vs local spline branch, against efficient-kan.

Measures, side by side in one process on this machine:

* ``step``: one Adam step of a [784, 64, 10] KAN on a batch of 64 (the MNIST study's model),
  for G in ``--grid-sizes``, with the spline branch ``dense``, ``local`` and ``auto`` (what a
  layer picks by :func:`kan_jax.layer.choose_spline_strategy`); the time per step is
  taken inside a compiled ``lax.scan`` of ``--scan-steps`` steps (as in the study's epoch);
  the compile time of the step and the time of ``model.init`` (eager, as a user calls it, the
  first call in a fresh process: JAX's in-memory caches and the host spline-fit factors are
  cleared first, so it includes the compilation of the init programs; best of
  ``INIT_REPEATS`` such calls);
  optax's Adam update alone on the same parameters, also inside a scan (the floor); and efficient-kan (PyTorch,
  CPU threads = cores) doing the same step, when ``--efficient-kan`` points at its ``src``
  folder (or it is importable);
* ``flashkan``: FlashKAN's configuration, a [784, 10] KAN with batch 200, one MNIST epoch
  (300 steps) at G = 10, 100, 500: kan_jax measured as a whole compiled epoch, efficient-kan
  from its per-step time times 300 (its G = 500 epoch would take many minutes here).

and writes the tables, with the machine named, into ``benchmarks/RESULTS.md`` between markers.
PyTorch is only needed for the efficient-kan columns (``pip install -e ".[bench]"``).

Usage::

    python -m benchmarks.spline_scaling --efficient-kan /path/to/efficient-kan/src
    python -m benchmarks.spline_scaling --grid-sizes 5 100 500 --skip-flashkan
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.mnist_study import machine_name
from kan_jax import KAN
from kan_jax.layer import StrategyThresholds, choose_spline_strategy
from kan_jax.layer import init as layer_init
from kan_jax.io import atomic_write

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Smallest wall time (s) of ``repeats`` calls of ``fn`` (which must block until done)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


#: ``model.init`` is timed as the best of this many first calls (caches cleared before each).
INIT_REPEATS = 3


def jax_step_timings(
    widths: list[int],
    grid_size: int,
    strategy: str,
    batch: int,
    scan_steps: int,
    repeats: int,
    key: int = 0,
    init_repeats: int = INIT_REPEATS,
    thresholds: Optional[StrategyThresholds] = None,
) -> dict[str, float]:
    """Init time (best of ``init_repeats`` first calls), compile time and per-step time (inside a scan) of an Adam step of a KAN.

    ``thresholds`` is the layers' ``strategy_thresholds`` (``None``: the backend's default).
    """
    model = KAN(widths, grid_size=grid_size, spline_strategy=strategy, strategy_thresholds=thresholds)
    x0 = jnp.zeros((batch, widths[0]), jnp.float32)
    init_s = min(first_init_s(model.init, jax.random.key(key), x0) for _ in range(init_repeats))
    compile_s, run = compiled_adam_scan(model, batch, scan_steps, key)
    run()
    per_step = best_of(run, repeats) / scan_steps
    return {"init_s": init_s, "compile_s": compile_s, "step_ms": per_step * 1e3}


def first_init_s(init: Callable[[jax.Array, jax.Array], Any], key: jax.Array, x: jax.Array) -> float:
    """Wall time of ``init(key, x)`` (e.g. ``model.init``) as a user's first call: JAX's in-memory
    caches and the host spline-fit factors are cleared first, so compilation is included."""
    jax.clear_caches()
    layer_init._host_pseudo_inverse.cache_clear()
    layer_init._host_banded_fit.cache_clear()
    t = time.perf_counter()
    jax.block_until_ready(init(key, x))
    return time.perf_counter() - t


def compiled_adam_scan(model: Any, batch: int, scan_steps: int, key: int = 0) -> tuple[float, Callable[[], Any]]:
    """(compile seconds, a blocking zero-argument run) of ``scan_steps`` Adam steps of ``model``
    on fixed random batches of ``batch`` inputs (cross-entropy over the last width's classes)."""
    widths = model.layers_hidden
    rng = np.random.default_rng(key)
    xs = jnp.asarray(rng.uniform(-1, 1, size=(scan_steps, batch, widths[0])).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, widths[-1], size=(scan_steps, batch)).astype(np.int32))
    variables = model.init(jax.random.key(key), xs[0])
    tx = optax.adam(1e-3)
    params, grid = variables["params"], variables["grid"]
    opt_state = tx.init(params)

    def step(carry, batch_xy):
        params, opt_state = carry
        x, y = batch_xy
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p, "grid": grid}, x), y).mean()
        )(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def scan(params, opt_state, xs, ys):
        return jax.lax.scan(step, (params, opt_state), (xs, ys))

    t = time.perf_counter()
    compiled = jax.jit(scan).lower(params, opt_state, xs, ys).compile()
    compile_s = time.perf_counter() - t
    return compile_s, lambda: jax.block_until_ready(compiled(params, opt_state, xs, ys))


def adam_floor_ms(widths: list[int], grid_size: int, scan_steps: int, repeats: int) -> float:
    """optax's Adam update alone on the parameters of the KAN, per step inside a ``lax.scan`` (ms).

    Measured like the step (inside a compiled scan, buffers reused), so that the two compare.
    """
    model = KAN(widths, grid_size=grid_size)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, widths[0])))["params"]
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), params)
    tx = optax.adam(1e-3)
    state = tx.init(params)

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(params, state, params)  # the parameters stand in for a gradient
        return (optax.apply_updates(params, updates), state), None

    run = jax.jit(lambda params, state: jax.lax.scan(step, (params, state), None, length=scan_steps)[0])
    jax.block_until_ready(run(params, state))
    return best_of(lambda: jax.block_until_ready(run(params, state)), repeats) / scan_steps * 1e3


def load_efficient_kan(path: Optional[str]) -> Any:
    """The efficient-kan package (from ``path`` if given), or ``None`` when it or torch is missing."""
    if path:
        sys.path.insert(0, str(Path(path).resolve()))
    try:
        return importlib.import_module("efficient_kan")
    except ImportError as err:
        print(f"efficient-kan not available ({err}); its columns are skipped", file=sys.stderr)
        return None


def torch_step_ms(ekan: Any, widths: list[int], grid_size: int, batch: int, repeats: int) -> float:
    """efficient-kan's Adam step (forward, cross-entropy, backward, step) on the CPU (ms)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = ekan.KAN(widths, grid_size=grid_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, widths[0]) * 2 - 1
    y = torch.randint(0, widths[-1], (batch,))

    def step() -> None:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step()
    return best_of(step, repeats) * 1e3


def step_table(args: argparse.Namespace, ekan: Any) -> str:
    widths = [784, 64, 10]
    rows = []

    def steps_for(g: int) -> int:
        return args.scan_steps if g <= 100 else max(2, args.scan_steps // 4)
    for g in args.grid_sizes:
        n = g + 3
        auto = choose_spline_strategy(n, 3)
        row: dict[str, Any] = {"G": g, "auto": auto}
        row["unrolled"] = None
        for strategy in ("dense", "local") + (("unrolled",) if auto == "unrolled" else ()):
            if strategy == "dense" and g > args.max_dense_grid:
                row[strategy] = None
                continue
            r = jax_step_timings(widths, g, strategy, 64, steps_for(g), args.repeats)
            row[strategy] = r
            print(f"G={g} {strategy}: {r}", flush=True)
        row["adam_ms"] = adam_floor_ms(widths, g, steps_for(g), args.repeats)
        row["ekan_ms"] = torch_step_ms(ekan, widths, g, 64, max(2, args.repeats // 2)) if ekan is not None else None
        print(f"G={g} adam {row['adam_ms']:.2f} ms, efficient-kan {row['ekan_ms']}", flush=True)
        rows.append(row)

    def ms(r: Optional[dict[str, float]]) -> str:
        return "—" if r is None else f"{r['step_ms']:.2f}"

    lines = [
        "| G | unrolled (ms/step) | dense (ms/step) | local (ms/step) | auto picks | efficient-kan (ms/step) | Adam alone (ms/step) | compile, auto (s) | `model.init` (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        chosen = row[row["auto"]] or row["local"]
        ek = "—" if row["ekan_ms"] is None else f"{row['ekan_ms']:.1f}"
        lines.append(
            f"| {row['G']} | {ms(row['unrolled'])} | {ms(row['dense'])} | {ms(row['local'])} | {row['auto']} | {ek} | {row['adam_ms']:.2f} "
            f"| {chosen['compile_s']:.2f} | {chosen['init_s']:.2f} |"
        )
    return "\n".join(lines)


def flashkan_table(args: argparse.Namespace, ekan: Any) -> str:
    widths, batch, steps = [784, 10], 200, 300
    lines = [
        "| G | kan_jax epoch (s) | kan_jax strategy | efficient-kan epoch (s, 300 × step) | ratio |",
        "|---|---|---|---|---|",
    ]
    for g in (10, 100, 500):
        strategy = choose_spline_strategy(g + 3, 3)
        r = jax_step_timings(widths, g, strategy, batch, steps, max(1, args.repeats // 3))
        epoch = r["step_ms"] * steps / 1e3
        if ekan is not None:
            ek = torch_step_ms(ekan, widths, g, batch, 3) * steps / 1e3
            ek_s, ratio = f"{ek:.2f}", f"{ek / epoch:.1f}×"
        else:
            ek_s = ratio = "—"
        print(f"FlashKAN G={g}: kan_jax {epoch:.3f} s ({strategy}), efficient-kan {ek_s}", flush=True)
        lines.append(f"| {g} | {epoch:.3f} | {strategy} | {ek_s} | {ratio} |")
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(RESULTS, text)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-sizes", type=int, nargs="+", default=[5, 10, 20, 50, 100, 200, 500, 1000])
    parser.add_argument("--max-dense-grid", type=int, default=1000, help="skip the dense branch above this G")
    parser.add_argument("--scan-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--efficient-kan", default=None, help="efficient-kan's src folder (for the PyTorch columns)")
    parser.add_argument("--skip-flashkan", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    ekan = load_efficient_kan(args.efficient_kan)
    machine = machine_name()
    body = [
        f"## Spline cost against the grid size (`python -m benchmarks.spline_scaling`)\n",
        f"Machine: {machine}. [784, 64, 10] KAN, k = 3, batch 64, one Adam step (per step inside a compiled "
        f"`lax.scan`, best of {args.repeats}; `model.init` a first call, caches cleared, best of {INIT_REPEATS}); "
        "efficient-kan in PyTorch on the same CPU, same step, same process.\n",
        step_table(args, ekan),
    ]
    if not args.skip_flashkan:
        body += [
            "\nFlashKAN's configuration: [784, 10] KAN, batch 200, one MNIST-sized epoch (300 steps), Adam.\n",
            flashkan_table(args, ekan),
        ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section(f"spline_scaling {jax.default_backend()}", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
