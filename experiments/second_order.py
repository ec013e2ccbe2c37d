r"""HSODM against Adam, δ-GClip and L-BFGS: loss against cost and wall time, curvature at the end.

Two full-batch problems:

* ``kan``: the KAN ``[2, 5, 1]`` (G=5, k=3, float64, 150 parameters) regression of the landscape
  study (:mod:`experiments.landscape`): ``f(x, y) = exp(sin(pi x) + y^2)`` on ``train_num``
  uniform points of ``[-1, 1]^2``, mean squared error, the knot grid fixed;
* ``mlp``: the ReLU MLP ``[784, 512, 10]`` (float32, 407,050 parameters) of the seed notebook on
  the first ``mlp_num`` MNIST training images, mean cross-entropy.

Each method starts from the same initialisation and runs a fixed number of steps in compiled
chunks (``lax.scan``); after each chunk the loss, the gradient norm, the cumulative cost and
the wall time (compilation excluded: every chunk is compiled ahead of time) are recorded.
**Cost** is counted in gradient-equivalents: one per gradient evaluation (every step of Adam
and δ-GClip; every line-search evaluation of L-BFGS and HSODM, which return the value and the
gradient together) and one per Hessian-vector product (HSODM's Lanczos steps, plus one for the
primal gradient pass of its linearisation). A product of the linearised gradient measures
0.3-0.8 of a gradient on the CPU (``benchmarks/RESULTS.md``), so this charges HSODM in full.
At each method's final point the minimum Hessian eigenvalue is computed by Lanczos
(:func:`kan_jax.hessian.min_eigenpair`, with its residual) and, for the KAN, exactly
(``jax.hessian`` + ``eigh``).

Outputs in ``--out-dir`` (default ``runs/second_order``), written atomically: one JSON per
problem and method (``kan_hsodm.json`` ...; a rerun skips those whose configuration matches,
``--force`` reruns) with the final parameters beside it (``kan_hsodm.msgpack``, written before
the JSON), ``second_order.png`` (loss against cost and against wall time, one row
per problem) and ``summary.md`` (the table).

Usage::

    python -m experiments.second_order --data-dir ../shared/data/mnist            # full (minutes)
    python -m experiments.second_order --preset quick --data-dir ../shared/data/mnist
    python -m experiments.second_order --problems kan                             # no MNIST needed
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from kan_jax import KAN
from kan_jax import hessian as hs
from kan_jax.io import atomic_write
from kan_jax.training.checkpoint import save_params
from kan_jax.data import DataError, create_dataset, load_mnist, preprocess_mnist
from kan_jax.optim import dgclip, hsodm

PROBLEMS = ("kan", "mlp")
METHODS = ("adam", "dgclip", "lbfgs", "hsodm")
COLORS = {"adam": "tab:blue", "dgclip": "tab:green", "lbfgs": "tab:orange", "hsodm": "tab:red"}


@dataclasses.dataclass(frozen=True)
class Config:
    """The study's configuration (``PRESETS`` has ``quick`` and ``full``)."""

    seed: int = 0
    kan_train_num: int = 1000
    kan_first_order_steps: int = 2000   # Adam, δ-GClip
    kan_lbfgs_steps: int = 200
    kan_hsodm_steps: int = 60
    kan_adam_lr: float = 1e-2
    kan_dgclip: tuple[float, float, float] = (0.5, 1.0, 0.1)   # (learning rate, gamma, delta)
    mlp_hidden: int = 512
    mlp_num: int = 1024
    mlp_first_order_steps: int = 400
    mlp_lbfgs_steps: int = 60
    mlp_hsodm_steps: int = 20
    mlp_adam_lr: float = 1e-3
    mlp_dgclip: tuple[float, float, float] = (0.1, 1.0, 0.1)
    hsodm_lanczos_steps: int = 20
    hsodm_delta: float = 1e-4
    chunks: int = 10
    min_eig_steps: int = 80
    kan_exact_eigh: bool = True         # also lambda_min by jax.hessian + eigh at the KAN's final points

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("steps", "num", "hidden", "chunks")) and not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{f.name} must be an int >= 1, got {v!r}")
            if f.name.endswith("lr") and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{f.name} must be a finite number > 0, got {v!r}")
        if self.hsodm_lanczos_steps < 2:
            raise ValueError(f"hsodm_lanczos_steps must be >= 2, got {self.hsodm_lanczos_steps}")
        if self.mlp_num > 60_000:
            raise ValueError(f"mlp_num must be <= 60000 (the MNIST training set), got {self.mlp_num}")

    def steps(self, problem: str, method: str) -> int:
        kind = {"adam": "first_order", "dgclip": "first_order", "lbfgs": "lbfgs", "hsodm": "hsodm"}[method]
        return getattr(self, f"{problem}_{kind}_steps")


PRESETS = {
    "full": Config(),
    "quick": Config(kan_train_num=200, kan_first_order_steps=100, kan_lbfgs_steps=20, kan_hsodm_steps=8,
                    mlp_hidden=32, mlp_num=256, mlp_first_order_steps=40, mlp_lbfgs_steps=8, mlp_hsodm_steps=4,
                    hsodm_lanczos_steps=8, chunks=1, min_eig_steps=20, kan_exact_eigh=False),
}


# ------------------------------------------------------------------------------------------
# Problems
# ------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """``[784, hidden, 10]`` with ReLU."""

    hidden: int = 512

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(10)(nn.relu(nn.Dense(self.hidden)(x)))


def _kan_problem(cfg: Config) -> dict[str, Any]:
    ds = create_dataset(lambda x: np.exp(np.sin(np.pi * x[:, [0]]) + x[:, [1]] ** 2), n_var=2,
                        train_num=cfg.kan_train_num, test_num=1, seed=cfg.seed)
    x, y = jnp.asarray(ds["train_input"], jnp.float64), jnp.asarray(ds["train_label"], jnp.float64)
    model = KAN((2, 5, 1), grid_size=5, spline_order=3, param_dtype=jnp.float64)
    variables = model.init(jax.random.key(cfg.seed), x[:1])
    grid = variables["grid"]

    def loss(params, batch):
        xb, yb = batch
        return jnp.mean((model.apply({"params": params, "grid": grid}, xb) - yb) ** 2)

    return {"name": "KAN [2, 5, 1] regression, exp(sin(πx) + y²), float64", "params": variables["params"], "loss": loss,
            "batch": (x, y), "adam_lr": cfg.kan_adam_lr, "dgclip": cfg.kan_dgclip, "exact": cfg.kan_exact_eigh}


def _mlp_problem(cfg: Config, mnist: Any) -> dict[str, Any]:
    x = jnp.asarray(preprocess_mnist(mnist.x_train[: cfg.mlp_num]), jnp.float32)
    y = jnp.asarray(np.asarray(mnist.y_train[: cfg.mlp_num], np.int32))
    model = MLP(cfg.mlp_hidden)
    params = model.init(jax.random.key(cfg.seed), x[:1])["params"]

    def loss(p, batch):
        xb, yb = batch
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

    return {"name": f"ReLU MLP [784, {cfg.mlp_hidden}, 10], {cfg.mlp_num} MNIST images, float32", "params": params,
            "loss": loss, "batch": (x, y), "adam_lr": cfg.mlp_adam_lr, "dgclip": cfg.mlp_dgclip, "exact": False}


def _optimizer(method: str, prob: dict[str, Any], cfg: Config) -> optax.GradientTransformation:
    if method == "adam":
        return optax.adam(prob["adam_lr"])
    if method == "dgclip":
        lr, gamma, delta = prob["dgclip"]
        return dgclip(learning_rate=lr, gamma=gamma, delta=delta)
    if method == "lbfgs":
        return optax.lbfgs()
    return hsodm(delta=cfg.hsodm_delta, num_lanczos_steps=cfg.hsodm_lanczos_steps)


def run_method(method: str, prob: dict[str, Any], cfg: Config, steps: int) -> dict[str, Any]:
    """Run ``steps`` steps in ``cfg.chunks`` compiled chunks; returns the history and final params."""
    loss, batch = prob["loss"], prob["batch"]
    tx = _optimizer(method, prob, cfg)
    f = lambda p: loss(p, batch)  # noqa: E731
    line_search = method in ("lbfgs", "hsodm")
    hvps_per_step = cfg.hsodm_lanczos_steps + 1 if method == "hsodm" else 0

    def step(carry, _):
        p, s, first = carry
        if line_search:
            value, grad = optax.value_and_grad_from_state(f)(p, state=s)
            updates, s = tx.update(grad, s, p, value=value, grad=grad, value_fn=f)
            cost = optax.tree_utils.tree_get(s, "num_linesearch_steps") + first + hvps_per_step
        else:
            value, grad = jax.value_and_grad(f)(p)
            updates, s = tx.update(grad, s, p)
            cost = jnp.asarray(1)
        return (optax.apply_updates(p, updates), s, jnp.zeros_like(first)), (value, optax.tree.norm(grad), cost)

    def chunk(carry, n):
        carry, hist = jax.lax.scan(step, carry, None, length=n)
        value, grad = jax.value_and_grad(f)(carry[0])  # the loss and gradient norm where the chunk ends
        return carry, hist, (value, optax.tree.norm(grad))

    sizes = [steps // cfg.chunks + (1 if i < steps % cfg.chunks else 0) for i in range(cfg.chunks)]
    sizes = [s for s in sizes if s > 0]
    carry = (prob["params"], tx.init(prob["params"]), jnp.asarray(1))
    compiled = {n: jax.jit(lambda c, n=n: chunk(c, n)).lower(carry).compile() for n in sorted(set(sizes))}
    values, gnorms, costs, times, wall = [], [], [], [], 0.0
    for n in sizes:
        t = time.perf_counter()
        carry, (v, g, c), final = jax.block_until_ready(compiled[n](carry))
        wall += time.perf_counter() - t
        values += np.asarray(v, np.float64).tolist()
        gnorms += np.asarray(g, np.float64).tolist()
        costs += np.asarray(c, np.float64).tolist()
        times += [wall] * n
    return {"params": carry[0], "loss": values, "grad_norm": gnorms, "cost": np.cumsum(costs).tolist(), "time_at_chunk_end": times,
            "final_loss": float(final[0]), "final_grad_norm": float(final[1]), "seconds": wall}


def curvature_at(prob: dict[str, Any], params: Any, cfg: Config) -> dict[str, Any]:
    batches = jax.tree.map(lambda a: a[None], prob["batch"])  # one stacked batch
    low = hs.min_eigenpair(prob["loss"], params, num_steps=cfg.min_eig_steps, batches=batches)
    out = {"lambda_min_lanczos": float(low.eigenvalue), "lambda_min_residual": float(low.residual_norm)}
    if prob["exact"]:
        out["lambda_min_exact"] = float(hs.exact_spectrum(prob["loss"], params, batches=batches)[0])
    return out


# ------------------------------------------------------------------------------------------
# Study
# ------------------------------------------------------------------------------------------
def _num(x: Any) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


def _device_text() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"{platform.machine()} CPU, {os.cpu_count()} cores (jax {jax.__version__})"
    return f"{dev.device_kind} (jax {jax.__version__})"


def run_study(cfg: Config, problems: Sequence[str], methods: Sequence[str], out_dir: Path, *, data_dir: Optional[Path] = None,
              force: bool = False, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run (or resume) every ``(problem, method)`` pair; returns ``records[problem][method]``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(data_dir) if "mlp" in problems else None  # fail early on missing data
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))
    records: dict[str, dict[str, Any]] = {}
    with jax.default_matmul_precision("highest"):
        for problem in problems:
            prob = None
            records[problem] = {}
            for method in methods:
                path = out_dir / f"{problem}_{method}.json"
                if not force and path.exists():
                    old = json.loads(path.read_text())
                    if old.get("config") == config:
                        log(f"{problem} {method}: kept {path.name}")
                        records[problem][method] = old
                        continue
                if prob is None:
                    prob = _kan_problem(cfg) if problem == "kan" else _mlp_problem(cfg, mnist)
                res = run_method(method, prob, cfg, cfg.steps(problem, method))
                final = res.pop("params")
                curv = curvature_at(prob, final, cfg)
                save_params(out_dir / f"{problem}_{method}.msgpack", final)
                rec = {"config": config, "problem": problem, "model": prob["name"], "method": method,
                       "num_params": int(sum(np.size(a) for a in jax.tree.leaves(prob["params"]))),
                       "steps": cfg.steps(problem, method), "device": _device_text(), **curv,
                       **{k: (_num(v) if isinstance(v, float) else [_num(x) for x in v]) for k, v in res.items()}}
                atomic_write(path, json.dumps(rec) + "\n")
                records[problem][method] = rec
                log(f"{problem} {method}: loss {rec['final_loss']:.4g}, |g| {rec['final_grad_norm']:.2e}, "
                    f"λmin {rec['lambda_min_lanczos']:.3g}, cost {rec['cost'][-1]:.0f}, {rec['seconds']:.2f} s")
    return records


def summary_text(records: dict[str, dict[str, Any]]) -> str:
    lines = ["| problem | method | steps | cost (gradient-equivalents) | wall time (s) | final loss | final ‖g‖ | λmin(H) Lanczos (residual) | λmin exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for problem, recs in records.items():
        for method, r in recs.items():
            exact = f"{r['lambda_min_exact']:.4g}" if r.get("lambda_min_exact") is not None else "–"
            lines.append(f"| {problem} | {method} | {r['steps']} | {r['cost'][-1]:.0f} | {r['seconds']:.2f} | {r['final_loss']:.4g} | "
                         f"{r['final_grad_norm']:.2e} | {r['lambda_min_lanczos']:.4g} ({r['lambda_min_residual']:.1e}) | {exact} |")
    device = next((r["device"] for recs in records.values() for r in recs.values()), "")
    models = "; ".join(f"{p}: {next(iter(recs.values()))['model']}" for p, recs in records.items() if recs)
    return "\n".join(lines) + f"\n\nMachine: {device}. Models: {models}. Wall time excludes compilation.\n"


def plot(records: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p for p in records if records[p]]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.6 * len(rows)), squeeze=False)
    for i, problem in enumerate(rows):
        for method, r in records[problem].items():
            loss = np.asarray(r["loss"], np.float64)
            n = len(loss)
            t = np.asarray(r["time_at_chunk_end"], np.float64)
            # chunk ends are the only times measured: place steps linearly inside each chunk
            ends = np.flatnonzero(np.diff(np.append(t, np.inf)) != 0)
            starts = np.concatenate([[0], ends[:-1] + 1])
            tt = np.zeros(n)
            prev = 0.0
            for s, e in zip(starts, ends):
                tt[s:e + 1] = prev + (t[e] - prev) * np.arange(1, e - s + 2) / (e - s + 1)
                prev = t[e]
            axes[i, 0].semilogy(r["cost"], loss, color=COLORS[method], label=method)
            axes[i, 1].semilogy(tt, loss, color=COLORS[method], label=method)
        axes[i, 0].set_xlabel("gradient-equivalents (gradients + HVPs)")
        axes[i, 1].set_xlabel("wall time (s, compilation excluded)")
        model = next(iter(records[problem].values()))["model"]
        for ax in axes[i]:
            ax.set_ylabel("training loss")
            ax.set_title(model, fontsize=9)
            ax.grid(alpha=0.3)
        axes[i, 0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.second_order",
                                description="HSODM vs Adam, δ-GClip and L-BFGS on a KAN regression and an MNIST MLP.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full", help="configuration preset (default full)")
    p.add_argument("--quick", action="store_true", help="same as --preset quick")
    p.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated subset of {PROBLEMS}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/second_order"), help="output folder (default runs/second_order)")
    p.add_argument("--force", action="store_true", help="rerun pairs whose results exist")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p


def _subset(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if not items or bad:
        raise ValueError(f"--{what} must be a comma-separated subset of {', '.join(allowed)}; got {text!r}")
    return list(dict.fromkeys(items))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        problems = _subset(args.problems, PROBLEMS, "problems")
        methods = _subset(args.methods, METHODS, "methods")
    except ValueError as err:
        parser.error(str(err))
    cfg = PRESETS["quick" if args.quick else args.preset]
    jax.config.update("jax_enable_x64", True)  # the KAN runs in float64; the MLP stays float32
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[second_order] {msg}", flush=True))
    start = time.perf_counter()
    try:
        records = run_study(cfg, problems, methods, args.out_dir, data_dir=args.data_dir, force=args.force, log=log)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot(records, args.out_dir / "second_order.png")
    text = summary_text(records) + f"Study wall time (this invocation, compilation included): {time.perf_counter() - start:.1f} s.\n"
    atomic_write(args.out_dir / "summary.md", text)
    log("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
