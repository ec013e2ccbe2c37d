"""Every basis family of the KAN layer against jaxKAN's matching layer and an MLP, one run.

For each shape (the MNIST study's [784, 64, 10] at batch 64 and KAN-benchmarking's
[1000, 1000, 1] at batch 100, resolution 5: B-spline intervals G with k = 3, Chebyshev and
Legendre degree, Fourier frequencies, RBF centres), side by side in one process:

* kan_jax's :class:`kan_jax.KAN` with ``basis`` = bspline, chebyshev, legendre, fourier, rbf;
* jaxKAN 0.3.7's layer of the same family (``spline``, ``chebyshev``, ``legendre``, ``fourier``,
  ``rbf``) in its ``KAN`` model, configured to our layer's function as far as its options go
  (the SiLU residual branch, per-edge external weights, no bias: the degree-0 polynomial is a
  basis; its default flavour and initialisation), when ``jaxkan`` is importable; its Fourier
  layer has neither residual branch nor external weights, so ours is also measured without
  ``spline_scaler`` (``fourier, no scaler``);
* the dense MLP (ReLU) of the B-spline KAN's parameter count, ``[in, H, out]``.

Columns: the forward pass, forward and backward (the loss and its gradient), and one Adam step
(parameters and optimizer state donated), each jitted and timed as back-to-back calls, the
programs of a basis and of its jaxKAN counterpart interleaved (``--repeats`` rounds of one loop
of at least ``--min-seconds`` each, the best round kept); and ``memory_analysis().temp_size_in_bytes``
of the compiled Adam step. The loss is the cross-entropy on random labels (10 outputs) or the
mean squared error on random targets (one output), on random inputs in ``[-1, 1]``.

Usage::

    python -m benchmarks.bases             # writes its section of benchmarks/RESULTS.md
    python -m benchmarks.bases --no-write --shapes mnist
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.mnist_study import machine_name
from benchmarks.spline_scaling import write_section
from kan_jax import KAN
from kan_jax.layer import BASES

#: name -> (widths, batch)
SHAPES = {"mnist": ([784, 64, 10], 64), "kan-benchmarking": ([1000, 1000, 1], 100)}
#: kan_jax basis -> jaxKAN layer type
JAXKAN_TYPE = {"bspline": "spline", "chebyshev": "chebyshev", "legendre": "legendre", "fourier": "fourier", "rbf": "rbf"}
RESOLUTION = 5


class MLP(nn.Module):
    """``[in, hidden, out]`` with ReLU."""

    widths: tuple[int, int, int]

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.widths[2])(nn.relu(nn.Dense(self.widths[1])(x)))


def count(params: Any) -> int:
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(params))


def loss_of(apply: Callable[[Any, jax.Array], jax.Array], out: int) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    if out == 1:
        return lambda p, x, y: jnp.mean((apply(p, x)[:, 0] - y) ** 2)
    return lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y.astype(jnp.int32)).mean()


def calibrate(call: Callable[[], Any], min_seconds: float) -> int:
    """Calls of ``call`` (after a warm-up) that take at least ``min_seconds``, at least 3."""
    jax.block_until_ready(call())
    t = time.perf_counter()
    jax.block_until_ready(call())
    return max(3, int(min_seconds / max(time.perf_counter() - t, 1e-6)))


def loop_s(call: Callable[[], Any], inner: int) -> float:
    """Seconds per call of ``call`` over ``inner`` back-to-back calls (asynchronous dispatch)."""
    t = time.perf_counter()
    for _ in range(inner):
        out = call()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / inner


def programs(apply: Callable, params: Any, x: jax.Array, y: jax.Array, out: int) -> tuple[dict[str, Callable[[], Any]], float]:
    """The forward, forward + backward and Adam-step calls, and the Adam step's temporaries (MB)."""
    loss = loss_of(apply, out)
    tx = optax.adam(1e-3)
    forward = jax.jit(apply)
    grad = jax.jit(jax.value_and_grad(loss))

    def step(p, s, xb, yb):
        value, g = jax.value_and_grad(loss)(p, xb, yb)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), x, y).compile()
    temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
    state = [jax.tree.map(jnp.copy, params), tx.init(params)]

    def train() -> Any:
        state[0], state[1], value = compiled(state[0], state[1], x, y)
        return value

    calls = {"forward": lambda: forward(params, x), "backward": lambda: grad(params, x, y), "step": train}
    return calls, temp_mb


def measure_side_by_side(models: dict[str, tuple[dict[str, Callable[[], Any]], float]], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Milliseconds per call of every program of every model, interleaved: ``--repeats`` rounds,
    each timing one loop of every program in turn, the best round kept (a load burst on a shared
    machine then hits the programs alike, and the quietest round is kept for each)."""
    inner = {(m, k): calibrate(call, args.min_seconds) for m, (calls, _) in models.items() for k, call in calls.items()}
    best = {key: float("inf") for key in inner}
    for _ in range(args.repeats):
        for (m, k), n in inner.items():
            best[(m, k)] = min(best[(m, k)], loop_s(models[m][0][k], n))
    return {m: {**{k: 1e3 * best[(m, k)] for k in calls}, "temp": temp} for m, (calls, temp) in models.items()}


def ours(basis: str, widths: list[int], x: jax.Array, **options: Any) -> tuple[Callable, Any]:
    model = KAN(widths, basis=basis, grid_size=RESOLUTION, **options)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    grid = variables["grid"]
    return (lambda p, z: model.apply({"params": p, "grid": grid}, z)), variables["params"]


def jaxkan_model(basis: str, widths: list[int]) -> tuple[Callable, Any]:
    from flax import nnx
    from jaxkan.models.KAN import KAN as JaxKAN

    layer_type = JAXKAN_TYPE[basis]
    # the function of our layer: no bias (the degree-0 polynomial is a basis function), the
    # SiLU residual and per-edge external weights (our spline_scaler)
    if layer_type == "spline":
        options = {"k": 3, "G": RESOLUTION, "add_bias": False}
    elif layer_type == "fourier":
        options = {"D": RESOLUTION, "add_bias": False}  # no residual branch in jaxKAN's Fourier layer
    else:
        options = {"D": RESOLUTION, "residual": nnx.silu, "external_weights": True, "add_bias": False}
    model = JaxKAN(layer_dims=list(widths), layer_type=layer_type, required_parameters=options, seed=0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return (lambda p, z: nnx.merge(graphdef, p, rest)(z)), params


def mlp(widths: list[int], n_params: int, x: jax.Array) -> tuple[Callable, Any, int]:
    hidden = max(1, round((n_params - widths[2]) / (widths[0] + 1 + widths[2])))
    model = MLP((widths[0], hidden, widths[2]))
    params = jax.jit(model.init)(jax.random.key(0), x)
    return model.apply, params, hidden


def fmt(r: Optional[dict[str, float]], key: str) -> str:
    if r is None:
        return "—"
    return f"{r[key]:.1f}" if key == "temp" else f"{r[key]:.2f}"


def shape_table(name: str, args: argparse.Namespace, have_jaxkan: bool) -> str:
    widths, batch = SHAPES[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, size=(batch, widths[0])).astype(np.float32))
    y = jnp.asarray(rng.integers(0, widths[-1], size=batch).astype(np.float32) if widths[-1] > 1 else rng.normal(size=batch).astype(np.float32))
    rows = []
    n_bspline = None
    for basis in args.bases:
        variants = [(basis, {})] + ([("fourier, no scaler", {"enable_standalone_scale_spline": False})] if basis == "fourier" else [])
        models, sizes = {}, {}
        for label, options in variants:
            apply, params = ours(basis, widths, x, **options)
            sizes[label] = count(params)
            models[label] = programs(apply, params, x, y, widths[-1])
        if have_jaxkan:
            models["jaxkan"] = programs(*jaxkan_model(basis, widths), x, y, widths[-1])
        times = measure_side_by_side(models, args)
        n_bspline = sizes[basis] if basis == "bspline" else n_bspline
        theirs = times.get("jaxkan")
        for label, _ in variants:
            mine = times[label]
            ratio = "—" if theirs is None else f"{theirs['step'] / mine['step']:.2f}×"
            rows.append(
                f"| {label} | {sizes[label]:,} | {fmt(mine, 'forward')} | {fmt(mine, 'backward')} | {fmt(mine, 'step')} "
                f"| {fmt(mine, 'temp')} | {fmt(theirs, 'forward')} | {fmt(theirs, 'backward')} | {fmt(theirs, 'step')} "
                f"| {fmt(theirs, 'temp')} | {ratio} |"
            )
            print(rows[-1], flush=True)
    if n_bspline is None:
        n_bspline = count(ours("bspline", widths, x)[1])
    m_apply, m_params, hidden = mlp(widths, n_bspline, x)
    r = measure_side_by_side({"mlp": programs(m_apply, m_params, x, y, widths[-1])}, args)["mlp"]
    rows.append(
        f"| MLP [{widths[0]}, {hidden}, {widths[2]}] | {count(m_params):,} | {fmt(r, 'forward')} | {fmt(r, 'backward')} "
        f"| {fmt(r, 'step')} | {fmt(r, 'temp')} | | | | | |"
    )
    head = (
        f"{widths}, batch {batch}, resolution {RESOLUTION}: milliseconds per call; temporaries of the compiled Adam step (MB).\n\n"
        "| basis | params (kan_jax) | forward | fwd + bwd | Adam step | temp MB | jaxKAN forward | jaxKAN fwd + bwd "
        "| jaxKAN Adam step | jaxKAN temp MB | jaxKAN / kan_jax step |\n" + "|---" * 11 + "|"
    )
    return head + "\n" + "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES))
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the best is kept")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="least duration of one timed loop")
    parser.add_argument("--no-jaxkan", action="store_true", help="skip jaxKAN's columns")
    parser.add_argument("--load", default="", help="a note on the machine's load, for the table")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    have_jaxkan = False
    if not args.no_jaxkan:
        try:
            import jaxkan  # noqa: F401

            have_jaxkan = True
        except ImportError:
            print("jaxkan is not installed: its columns stay empty")
    note = f" {args.load}" if args.load else ""
    body = [
        "## Basis families against jaxKAN and the MLP (`python -m benchmarks.bases`)\n",
        f"Machine: {machine_name()}.{note} One process, jitted calls back to back, the programs of a row and its jaxKAN "
        f"counterpart interleaved (best of {args.repeats} rounds); "
        "jaxKAN 0.3.7 in its `KAN` model with the matching layer, configured to our layer's function (SiLU "
        "residual, external weights, no bias; its Fourier layer has neither residual nor external weights, hence "
        "the row of ours without `spline_scaler`), its default flavour otherwise; the MLP has the B-spline KAN's "
        "parameter count.\n",
    ]
    for name in args.shapes:
        body.append(shape_table(name, args, have_jaxkan) + "\n")
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section(f"bases {jax.default_backend()}", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
