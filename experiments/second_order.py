r"""HSODM against Adam, δ-GClip and L-BFGS: loss against cost and wall time, curvature at the end.

Two full-batch problems:

* ``kan``: the KAN ``[2, 5, 1]`` (G=5, k=3, float64, 150 parameters) regression of the landscape
  study (:mod:`experiments.models`): ``f(x, y) = exp(sin(pi x) + y^2)`` on ``train_num``
  uniform points of ``[-1, 1]^2``, mean squared error, the knot grid fixed;
* ``mlp``: the ReLU MLP ``[784, 512, 10]`` (float32, 407,050 parameters) of the seed notebook on
  the first ``mlp_num`` MNIST training images, mean cross-entropy.

Each method starts from the same initialisation and runs a fixed number of steps in compiled
chunks (:func:`kan_jax.training.loops.minimize`); after each chunk the loss, the gradient
norm, the cumulative cost and the wall time (compilation excluded: every chunk is compiled ahead of time) are recorded.
**Cost** is counted in gradient-equivalents: one per gradient evaluation (every step of Adam
and δ-GClip; every line-search evaluation of L-BFGS and HSODM, which return the value and the
gradient together) and one per Hessian-vector product (HSODM's Lanczos steps, plus one for the
primal gradient pass of its linearisation), which charges HSODM in full
(``python -m benchmarks.hessian_bench`` measures a product against a gradient). At each
method's final point the minimum Hessian eigenvalue is computed by Lanczos
(:func:`kan_jax.curvature.min_eigenpair`, with its residual) and, for the KAN, exactly
(``jax.hessian`` + ``eigh``).

Outputs in ``--out-dir`` (default ``runs/second_order``), written atomically: one JSON per
problem and method (``kan_hsodm.json`` ...; a rerun skips those whose configuration matches,
``--force`` reruns) with the final parameters beside it (``kan_hsodm.msgpack``, written before
the JSON), ``second_order.png`` (loss against cost and against wall time, one row
per problem) and ``summary.md`` (the table). Every field of :class:`Config` is a flag too
(``--kan-lbfgs-steps 50``).

Usage::

    python -m experiments.second_order --data-dir ../shared/data/mnist            # full (minutes)
    python -m experiments.second_order --preset quick --data-dir ../shared/data/mnist
    python -m experiments.second_order --problems kan                             # no MNIST needed
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._cli import option, parse, subset
from experiments._env import device_description
from experiments._records import num
from experiments.models import MLP, cross_entropy_loss, mnist_arrays, regression_kan, squared_loss, toy_dataset
from kan_jax import curvature as cv
from kan_jax.data import DataError, load_mnist
from kan_jax.io import atomic_write
from kan_jax.optim import dgclip, hsodm
from kan_jax.training import loops
from kan_jax.training.checkpoint import save_params

PROBLEMS = ("kan", "mlp")
METHODS = ("adam", "dgclip", "lbfgs", "hsodm")
COLORS = {"adam": "tab:blue", "dgclip": "tab:green", "lbfgs": "tab:orange", "hsodm": "tab:red"}

#: The MLP's layer names (the parameter keys, which also seed their initialisation).
MLP_LAYER_NAMES = ("Dense_1", "Dense_0")


@dataclasses.dataclass(frozen=True)
class Config:
    """The study's configuration, the resume key of its records (:data:`PRESETS` has two)."""

    seed: int = 0
    kan_train_num: int = 1000
    kan_first_order_steps: int = option(2000, help="Adam and δ-GClip steps on the KAN")
    kan_lbfgs_steps: int = 200
    kan_hsodm_steps: int = 60
    kan_adam_lr: float = 1e-2
    kan_dgclip: tuple[float, float, float] = option((0.5, 1.0, 0.1), help="δ-GClip's learning rate, gamma, delta")
    mlp_hidden: int = 512
    mlp_num: int = 1024
    mlp_first_order_steps: int = 400
    mlp_lbfgs_steps: int = 60
    mlp_hsodm_steps: int = 20
    mlp_adam_lr: float = 1e-3
    mlp_dgclip: tuple[float, float, float] = (0.1, 1.0, 0.1)
    hsodm_lanczos_steps: int = 20
    hsodm_delta: float = 1e-4
    chunks: int = option(10, help="compiled chunks per run (the wall-time resolution)")
    min_eig_steps: int = option(80, help="Lanczos steps of lambda_min at the final points")
    kan_exact_eigh: bool = option(True, flag="--no-kan-exact-eigh", help="skip the KAN's exact lambda_min")

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
        """The number of steps of ``method`` on ``problem``."""
        kind = {"adam": "first_order", "dgclip": "first_order", "lbfgs": "lbfgs", "hsodm": "hsodm"}[method]
        return getattr(self, f"{problem}_{kind}_steps")


#: ``full``: the published set-up; ``quick``: a smoke run.
PRESETS = {
    "full": Config(),
    "quick": Config(kan_train_num=200, kan_first_order_steps=100, kan_lbfgs_steps=20, kan_hsodm_steps=8,
                    mlp_hidden=32, mlp_num=256, mlp_first_order_steps=40, mlp_lbfgs_steps=8, mlp_hsodm_steps=4,
                    hsodm_lanczos_steps=8, chunks=1, min_eig_steps=20, kan_exact_eigh=False),
}


@dataclasses.dataclass(frozen=True)
class SecondOrderArgs:
    """Everything ``python -m experiments.second_order`` takes."""

    study: Config = option(default_factory=Config, prefix="")
    problems: tuple[str, ...] = option(PROBLEMS, separator=",", help=f"comma-separated subset of {PROBLEMS}")
    methods: tuple[str, ...] = option(METHODS, separator=",", help=f"comma-separated subset of {METHODS}")
    data_dir: Optional[Path] = option(
        None, help="MNIST IDX folder (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    out_dir: Path = option(Path("runs/second_order"), help="output folder")
    force: bool = option(False, help="rerun pairs whose results exist")
    quiet: bool = option(False, help="print nothing")

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", subset("problems", self.problems, PROBLEMS))
        object.__setattr__(self, "methods", subset("methods", self.methods, METHODS))


# ------------------------------------------------------------------------------------------
# Problems
# ------------------------------------------------------------------------------------------
def _kan_problem(cfg: Config) -> dict[str, Any]:
    ds = toy_dataset(cfg.kan_train_num, cfg.seed, jnp.float64, test_num=1)
    x, y = ds["train_input"], ds["train_label"]
    model = regression_kan(5)
    variables = model.init(jax.random.key(cfg.seed), x[:1])
    return {"name": "KAN [2, 5, 1] regression, exp(sin(πx) + y²), float64", "params": variables["params"],
            "loss": squared_loss(model, variables["grid"]), "batch": (x, y), "adam_lr": cfg.kan_adam_lr,
            "dgclip": cfg.kan_dgclip, "exact": cfg.kan_exact_eigh}


def _mlp_problem(cfg: Config, mnist: Any) -> dict[str, Any]:
    x, y = mnist_arrays(mnist.x_train, mnist.y_train, cfg.mlp_num)
    model = MLP(cfg.mlp_hidden, names=MLP_LAYER_NAMES)
    params = model.init(jax.random.key(cfg.seed), x[:1])["params"]
    return {"name": f"ReLU MLP [784, {cfg.mlp_hidden}, 10], {cfg.mlp_num} MNIST images, float32", "params": params,
            "loss": cross_entropy_loss(model), "batch": (x, y), "adam_lr": cfg.mlp_adam_lr, "dgclip": cfg.mlp_dgclip,
            "exact": False}


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
    hvps_per_step = cfg.hsodm_lanczos_steps + 1 if method == "hsodm" else 0

    def objective(params):  # the data are constants of the compiled chunks
        return loss(params, batch)

    def chunk(params, state, n):
        return loops.minimize(objective, params, optimizer=tx, num_steps=n, opt_state=state, history_size=n)

    sizes = [steps // cfg.chunks + (1 if i < steps % cfg.chunks else 0) for i in range(cfg.chunks)]
    sizes = [s for s in sizes if s > 0]
    params, state = prob["params"], tx.init(prob["params"])
    compiled = {n: jax.jit(functools.partial(chunk, n=n)).lower(params, state).compile() for n in sorted(set(sizes))}
    values, gnorms, costs, times, wall = [], [], [], [], 0.0
    for n in sizes:
        t = time.perf_counter()
        res = jax.block_until_ready(compiled[n](params, state))
        wall += time.perf_counter() - t
        params, state, h = res.params, res.opt_state, res.history
        values += np.asarray(h.value, np.float64).tolist()
        gnorms += np.asarray(h.grad_norm, np.float64).tolist()
        costs += (np.asarray(h.num_evals, np.float64) + hvps_per_step).tolist()
        times += [wall] * n
    return {"params": params, "loss": values, "grad_norm": gnorms, "cost": np.cumsum(costs).tolist(),
            "time_at_chunk_end": times, "final_loss": float(res.value), "final_grad_norm": float(res.grad_norm),
            "seconds": wall}


def curvature_at(prob: dict[str, Any], params: Any, cfg: Config) -> dict[str, Any]:
    """Lanczos lambda_min of the Hessian at ``params`` (and the exact one where asked)."""
    batches = jax.tree.map(lambda a: a[None], prob["batch"])  # one stacked batch
    low = cv.min_eigenpair(prob["loss"], params, num_steps=cfg.min_eig_steps, batches=batches)
    out = {"lambda_min_lanczos": float(low.eigenvalue), "lambda_min_residual": float(low.residual_norm)}
    if prob["exact"]:
        out["lambda_min_exact"] = float(cv.exact_spectrum(prob["loss"], params, batches=batches)[0])
    return out


# ------------------------------------------------------------------------------------------
# Study
# ------------------------------------------------------------------------------------------
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
                       "steps": cfg.steps(problem, method), "device": device_description(), **curv,
                       **{k: (num(v) if isinstance(v, float) else [num(x) for x in v]) for k, v in res.items()}}
                atomic_write(path, json.dumps(rec) + "\n")
                records[problem][method] = rec
                log(f"{problem} {method}: loss {rec['final_loss']:.4g}, |g| {rec['final_grad_norm']:.2e}, "
                    f"λmin {rec['lambda_min_lanczos']:.3g}, cost {rec['cost'][-1]:.0f}, {rec['seconds']:.2f} s")
    return records


def summary_text(records: dict[str, dict[str, Any]]) -> str:
    """The study's table (one row per problem and method) with the machine and models named."""
    lines = ["| problem | method | steps | cost (gradient-equivalents) | wall time (s) | final loss | final ‖g‖ | "
             "λmin(H) Lanczos (residual) | λmin exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for problem, recs in records.items():
        for method, r in recs.items():
            exact = f"{r['lambda_min_exact']:.4g}" if r.get("lambda_min_exact") is not None else "–"
            lines.append(f"| {problem} | {method} | {r['steps']} | {r['cost'][-1]:.0f} | {r['seconds']:.2f} | {r['final_loss']:.4g} | "
                         f"{r['final_grad_norm']:.2e} | {r['lambda_min_lanczos']:.4g} ({r['lambda_min_residual']:.1e}) | {exact} |")
    device = next((r["device"] for recs in records.values() for r in recs.values()), "")
    models = "; ".join(f"{p}: {next(iter(recs.values()))['model']}" for p, recs in records.items() if recs)
    return "\n".join(lines) + f"\n\nMachine: {device}. Models: {models}. Wall time excludes compilation.\n"


def published_markdown(out_dir: Path) -> str:
    """The table the documentation includes, from the records in ``out_dir``."""
    records = {p: {m: json.loads((out_dir / f"{p}_{m}.json").read_text()) for m in METHODS
                   if (out_dir / f"{p}_{m}.json").exists()} for p in PROBLEMS}
    if not any(records.values()):
        raise FileNotFoundError(f"no second-order records (<problem>_<method>.json) in {out_dir}")
    return summary_text({p: recs for p, recs in records.items() if recs})


def plot(records: dict[str, dict[str, Any]], path: Path) -> Path:
    """``second_order.png``: loss against cost and against wall time, one row per problem."""
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m experiments.second_order``: returns the exit status (2: MNIST missing)."""
    args = parse(SecondOrderArgs, {name: SecondOrderArgs(study=c) for name, c in PRESETS.items()}, argv,
                 prog="python -m experiments.second_order",
                 description="HSODM vs Adam, δ-GClip and L-BFGS on a KAN regression and an MNIST MLP.")
    jax.config.update("jax_enable_x64", True)  # the KAN runs in float64; the MLP stays float32
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[second_order] {msg}", flush=True))
    start = time.perf_counter()
    try:
        records = run_study(args.study, args.problems, args.methods, args.out_dir, data_dir=args.data_dir,
                            force=args.force, log=log)
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
