r"""SFN against Adam and SGD on MNIST at equal epochs: minibatch gradients, a √n Hessian batch.

Models (float32, mean cross-entropy, the same initialisation for every optimiser of a model):
the ReLU MLP ``[784, 512, 10]`` (:class:`experiments.models.MLP`) and the KAN ``[784, 64, 10]``
(G=5, k=3, :class:`kan_jax.KAN`). Optimisers: SFN (:func:`kan_jax.optim.sfn`), Adam and SGD,
each for ``epochs`` epochs of batch-128 steps (a fresh shuffle per epoch, the last partial batch
kept, :func:`kan_jax.training.train_epoch`), every step size multiplied by ``lr_decay`` after
each epoch as in the MNIST study's ExponentialLR (``--lr-decay 1``: constant step sizes, as in
the seed notebook). At every SFN step the Hessian-vector products are
those of the mean loss on ``round(sqrt(n))`` training samples (245 of 60,000) drawn uniformly,
with replacement, independently of the gradient batch and of the other steps; the gradient of
that batch is linearised once per step (:func:`jax.linearize`) and each Lanczos step is one
product.

An epoch is one compiled ``lax.scan`` (compiled ahead of time, so no compilation is timed);
after it, the loss and accuracy on the full training and test sets
(:func:`kan_jax.training.evaluate`, batches of 4,096), SFN's ``lambda_min`` of the augmented
matrix ``[[H, g], [g^T, -delta]]`` at the epoch's last step and its Hessian-vector products per
step are recorded, with the seconds of the training epoch alone (evaluation excluded).

Outputs in ``--out-dir`` (default ``runs/sfn``), written atomically: ``result.json`` (one record
per finished model and optimiser, rewritten after each; a rerun keeps the records made with the
same configuration and runs only the others, ``--force`` reruns all), ``sfn.png`` (test
accuracy and training loss against epochs and against training wall time, one row per model;
needs matplotlib, ``--no-plot`` skips it) and ``summary.md`` (the table, also what
``python -m experiments.publish`` puts in the documentation).

Usage::

    python -m experiments.sfn --data-dir ../shared/data/mnist                 # full: 5 epochs
    python -m experiments.sfn --quick --data-dir ../shared/data/mnist         # a smoke run
    python -m experiments.sfn --models mlp --lr-decay 1 --out-dir runs/sfn_constant
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
import numpy as np
import optax

from experiments._cli import option, parse, subset
from experiments._env import device_description
from experiments._records import num
from experiments.models import MLP, mnist_arrays
from kan_jax import KAN
from kan_jax.data import DataError, load_mnist
from kan_jax.io import atomic_write, save_figure, write_json
from kan_jax.optim import sfn
from kan_jax.training import TrainState, evaluate, num_batches, train_epoch

__all__ = ["Config", "PRESETS", "SFNArgs", "hessian_batch_args", "main", "plot", "prepare_model", "published_markdown", "run_one",
           "run_study", "summary_text"]

MODELS = ("mlp", "kan")
OPTIMIZERS = ("sfn", "adam", "sgd")
COLORS = {"sfn": "tab:red", "adam": "tab:blue", "sgd": "tab:green"}


@dataclasses.dataclass(frozen=True)
class Config:
    """What determines the numbers of a run: the resume key of its record."""

    seed: int = option(0, help="seed of the initialisation, shuffles and Hessian batches")
    epochs: int = option(5, help="training epochs of every optimiser")
    train_subset: Optional[int] = option(None, help="use only the first N training images")
    test_subset: Optional[int] = option(None, help="use only the first N test images")
    batch_size: int = option(128, help="gradient batch size")
    hessian_batch_size: Optional[int] = option(None, help="SFN's Hessian batch (default round(sqrt(training images)))")
    eval_batch_size: int = option(4096, help="batch size of the full-set evaluations")
    mlp_hidden: int = option(512, help="hidden width of the [784, H, 10] MLP")
    kan_hidden: int = option(64, help="hidden width of the [784, H, 10] KAN")
    adam_lr: float = 1e-3
    sgd_lr: float = 1e-2
    lr_decay: float = option(0.8, help="factor of every optimiser's step size after each epoch (1: constant)")
    sfn_lr: float = option(0.5, help="SFN's step size")
    sfn_delta: float = option(1.0, help="SFN's delta of [[H, g], [g^T, -delta]] (a damping: |theta| >= delta)")
    sfn_lanczos_steps: int = option(2, help="SFN's Lanczos steps (Hessian-vector products) per step")
    sfn_nu: float = option(1e-2, help="SFN's threshold on |t|")
    sfn_radius: Optional[float] = option(None, help="SFN's cap on the direction's norm")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "mlp_hidden", "kan_hidden"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("train_subset", "test_subset", "hessian_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"--lr-decay must be in (0, 1], got {self.lr_decay!r}")
        for name in ("adam_lr", "sgd_lr", "sfn_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(self, name)!r}")
        try:
            self.optimizer("sfn", 1)
        except ValueError as err:
            raise ValueError(f"SFN options: {err}") from None

    def optimizer(self, name: str, steps_per_epoch: int) -> optax.GradientTransformation:
        """The optax transformation of ``name`` (one of :data:`OPTIMIZERS`), its step size
        multiplied by ``lr_decay`` every ``steps_per_epoch`` steps (ExponentialLR per epoch)."""
        lr = optax.exponential_decay(getattr(self, f"{name}_lr"), steps_per_epoch, self.lr_decay, staircase=True)
        if name == "adam":
            return optax.adam(lr)
        if name == "sgd":
            return optax.sgd(lr)
        return sfn(lr, delta=self.sfn_delta, num_lanczos_steps=self.sfn_lanczos_steps, nu=self.sfn_nu, radius=self.sfn_radius)

    def hyperparameters(self, name: str) -> dict[str, Any]:
        """The hyperparameters of ``name`` by their short names."""
        prefix = f"{name}_"
        hp = {f.name[len(prefix):]: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith(prefix)}
        return {**hp, "lr_decay": self.lr_decay}


#: ``full``: the study (5 epochs on all of MNIST); ``quick``: a smoke run of a few steps.
PRESETS = {
    "full": Config(),
    "quick": Config(epochs=2, train_subset=256, test_subset=256, batch_size=64, eval_batch_size=256, mlp_hidden=32,
                    kan_hidden=8, sfn_lanczos_steps=3),
}


@dataclasses.dataclass(frozen=True)
class SFNArgs:
    """Everything ``python -m experiments.sfn`` takes."""

    study: Config = option(default_factory=Config, prefix="")
    models: tuple[str, ...] = option(MODELS, separator=",", help=f"comma-separated subset of {MODELS}")
    optimizers: tuple[str, ...] = option(OPTIMIZERS, separator=",", help=f"comma-separated subset of {OPTIMIZERS}")
    data_dir: Optional[Path] = option(None, help="MNIST IDX folder (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    out_dir: Path = option(Path("runs/sfn"), help="output folder")
    force: bool = option(False, help="rerun the runs whose records exist")
    plot: bool = option(True, flag="--no-plot", help="do not draw the figure")
    quiet: bool = option(False, help="print nothing")

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", subset("models", self.models, MODELS))
        object.__setattr__(self, "optimizers", subset("optimizers", self.optimizers, OPTIMIZERS))


# ------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------
def prepare_model(name: str, cfg: Config, sample_x: jax.Array) -> dict[str, Any]:
    """The Linen model of ``name``, its description, initial variables and compiled evaluation,
    shared by every optimiser of the model."""
    if name == "mlp":
        model, description = MLP(cfg.mlp_hidden), f"ReLU MLP [784, {cfg.mlp_hidden}, 10]"
    else:
        model, description = KAN((784, cfg.kan_hidden, 10)), f"KAN [784, {cfg.kan_hidden}, 10] (G=5, k=3)"
    variables = jax.jit(model.init)(jax.random.key(cfg.seed), sample_x[:1])
    return {"name": name, "model": model, "description": description, "params": variables["params"],
            "grid": variables.get("grid", {}),
            "evaluate": jax.jit(functools.partial(evaluate, model, batch_size=cfg.eval_batch_size))}


def hessian_batch_args(model: Any, size: int) -> Callable[..., dict[str, Any]]:
    """``extra_args`` of :func:`~kan_jax.training.train_epoch` for SFN: ``hvp_fn`` on ``size``
    training samples drawn uniformly with replacement with the step's key."""

    def extra_args(params, grid, x, y, key):
        idx = jax.random.randint(key, (size,), 0, x.shape[0])
        xb, yb = x[idx], y[idx]

        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p, "grid": grid}, xb), yb).mean()

        _, hvp = jax.linearize(jax.grad(loss), params)
        return {"hvp_fn": hvp}

    return extra_args


def _metrics(state: Any, data: tuple[jax.Array, ...], eval_fn: Callable[..., Any]) -> dict[str, Any]:
    x_train, y_train, x_test, y_test = data
    tr, te = eval_fn(state.params, state.grid, x_train, y_train), eval_fn(state.params, state.grid, x_test, y_test)
    return {"train_loss": num(tr["val_loss"]), "train_acc": num(tr["val_acc"]), "test_loss": num(te["val_loss"]),
            "test_acc": num(te["val_acc"])}


def run_one(prepared: dict[str, Any], opt_name: str, cfg: Config, data: tuple[jax.Array, ...],
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one model (:func:`prepare_model`) with one optimiser; returns its record."""
    x_train, y_train = data[0], data[1]
    n = int(x_train.shape[0])
    model, model_name, eval_fn = prepared["model"], prepared["name"], prepared["evaluate"]
    steps = num_batches(n, cfg.batch_size)
    tx = cfg.optimizer(opt_name, steps)
    state = TrainState(prepared["params"], prepared["grid"], tx.init(prepared["params"]))
    hess = cfg.hessian_batch_size or max(1, round(math.sqrt(n)))
    extra = hessian_batch_args(model, hess) if opt_name == "sfn" else None
    epoch = functools.partial(train_epoch, model, tx, batch_size=cfg.batch_size, extra_args=extra)
    epoch_keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 1), cfg.epochs)
    compiled = jax.jit(epoch).lower(state, epoch_keys[0], x_train, y_train).compile()
    rows = [{"epoch": 0, "wall_time": 0.0, **_metrics(state, data, eval_fn)}]
    wall = 0.0
    for e in range(cfg.epochs):
        t = time.perf_counter()
        state, m = jax.block_until_ready(compiled(state, epoch_keys[e], x_train, y_train))
        seconds = time.perf_counter() - t
        wall += seconds
        row = {"epoch": e + 1, "seconds": seconds, "wall_time": wall, "running_train_loss": num(m["train_loss"]),
               **_metrics(state, data, eval_fn)}
        if opt_name == "sfn":
            s = state.opt_state
            row.update(eigenvalue=num(s.eigenvalue), residual=num(s.residual), used_newton=bool(s.used_newton),
                       hvps_per_step=int(s.num_matvecs) / int(s.count))
        rows.append(row)
        log(f"{model_name} {opt_name} epoch {e + 1}: test acc {100 * row['test_acc']:.2f}%, train loss "
            f"{row['train_loss']:.4f}, {seconds:.2f} s" + (f", θ {row['eigenvalue']:.4g}" if opt_name == "sfn" else ""))
    return {"config": dataclasses.asdict(cfg), "model": model_name, "description": prepared["description"],
            "optimizer": opt_name,
            "hyperparameters": cfg.hyperparameters(opt_name), "hessian_batch_size": hess if opt_name == "sfn" else None,
            "num_params": int(sum(np.size(a) for a in jax.tree.leaves(state.params))), "steps_per_epoch": steps,
            "device": device_description(), "epochs": rows,
            "seconds_per_epoch": float(np.min([r["seconds"] for r in rows[1:]])),
            "median_seconds_per_epoch": float(np.median([r["seconds"] for r in rows[1:]])),
            "final_test_acc": rows[-1]["test_acc"]}


# ------------------------------------------------------------------------------------------
# Study
# ------------------------------------------------------------------------------------------
def _load(path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError) as err:
        log(f"warning: {path} is unreadable ({err}); its runs are made again")
        return {}


def run_study(cfg: Config, models: Sequence[str], optimizers: Sequence[str], out_dir: Path, *,
              data_dir: Optional[Path] = None, force: bool = False,
              log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run (or resume) every (model, optimiser) pair; returns ``{"<model>_<optimiser>": record}``.

    ``result.json`` holds every record kept or made, rewritten atomically after each run.
    """
    path = out_dir / "result.json"
    runs = {} if force else _load(path, log)
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))
    data = None
    for model_name in models:
        prepared = None
        for opt_name in optimizers:
            name = f"{model_name}_{opt_name}"
            if runs.get(name, {}).get("config") == config:
                log(f"{name}: kept from {path.name}")
                continue
            if data is None:
                mnist = load_mnist(data_dir)
                data = (*mnist_arrays(mnist.x_train, mnist.y_train, cfg.train_subset),
                        *mnist_arrays(mnist.x_test, mnist.y_test, cfg.test_subset))
            prepared = prepared or prepare_model(model_name, cfg, data[0])
            runs[name] = json.loads(json.dumps(run_one(prepared, opt_name, cfg, data, log)))
            write_json(path, {"runs": runs})
    return {f"{m}_{o}": runs[f"{m}_{o}"] for m in models for o in optimizers}


def summary_text(records: dict[str, dict[str, Any]]) -> str:
    """The table: one row per model and optimiser, with SFN's cost against Adam's."""
    lines = ["| model | optimiser | hyperparameters | test acc % after the last epoch | train loss | "
             "s per epoch, fastest (median) | × Adam | HVPs per step | λmin(F), last epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records.values():
        adam = records.get(f"{r['model']}_adam")
        ratio = f"{r['seconds_per_epoch'] / adam['seconds_per_epoch']:.2f}" if adam else "–"
        last = r["epochs"][-1]
        hp = ", ".join(f"{k}={v:g}" for k, v in r["hyperparameters"].items() if v is not None)
        if r["optimizer"] == "sfn":
            hp += f", Hessian batch {r['hessian_batch_size']}"
        hvps = f"{last['hvps_per_step']:g} (+1 gradient)" if r["optimizer"] == "sfn" else "0"
        eig = f"{last['eigenvalue']:.4g}" if r["optimizer"] == "sfn" else "–"
        lines.append(f"| {r['description']} | {r['optimizer']} | {hp} | {100 * last['test_acc']:.2f} | "
                     f"{last['train_loss']:.4f} | {r['seconds_per_epoch']:.2f} ({r['median_seconds_per_epoch']:.2f}) | "
                     f"{ratio} | {hvps} | {eig} |")
    first = next(iter(records.values()))
    cfg = first["config"]
    return ("\n".join(lines) + f"\n\nMachine: {first['device']}. {len(first['epochs']) - 1} epochs, batch "
            f"{cfg['batch_size']}, {first['steps_per_epoch']} steps per epoch; seconds per epoch: the compiled "
            "training epoch alone (evaluation and compilation excluded), the fastest epoch (other jobs only "
            "slow a run down) and the median; × Adam: ratio of the fastest epochs. \"+1 gradient\": the "
            "linearised gradient of the Hessian batch.\n")


def published_markdown(out_dir: Path) -> str:
    """The table the documentation includes, from ``result.json`` in ``out_dir``."""
    path = out_dir / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"no SFN records (result.json) in {out_dir}")
    runs = json.loads(path.read_text())["runs"]
    return summary_text({f"{m}_{o}": runs[f"{m}_{o}"] for m in MODELS for o in OPTIMIZERS if f"{m}_{o}" in runs})


def plot(records: dict[str, dict[str, Any]], path: Path) -> Path:
    """``sfn.png``: test accuracy and training loss against epochs and against wall time."""
    from matplotlib.figure import Figure

    rows = list(dict.fromkeys(r["model"] for r in records.values()))
    fig = Figure(figsize=(16, 3.6 * len(rows)), dpi=110)
    axes = fig.subplots(len(rows), 4, squeeze=False)
    panels = (("epoch", "test_acc"), ("epoch", "train_loss"), ("wall_time", "test_acc"), ("wall_time", "train_loss"))
    for r in records.values():
        i = rows.index(r["model"])
        for ax, (x_key, y_key) in zip(axes[i], panels):
            xs = [row[x_key] for row in r["epochs"]]
            ys = [(100 if "acc" in y_key else 1) * row[y_key] for row in r["epochs"]]
            ax.plot(xs, ys, marker="o", ms=3, color=COLORS[r["optimizer"]], label=r["optimizer"])
            ax.set_xlabel("epoch" if x_key == "epoch" else "training wall time (s)")
            ax.set_ylabel("test accuracy (%)" if "acc" in y_key else "training loss (full set)")
            ax.set_title(r["description"], fontsize=9)
            ax.grid(alpha=0.3)
            if "loss" in y_key:
                ax.set_yscale("log")
    for ax in axes[:, 0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m experiments.sfn``: returns the exit status (2: MNIST missing)."""
    args = parse(SFNArgs, {name: SFNArgs(study=c) for name, c in PRESETS.items()}, argv, prog="python -m experiments.sfn",
                 description="SFN against Adam and SGD on an MNIST MLP and KAN at equal epochs.")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[sfn] {msg}", flush=True))
    try:
        records = run_study(args.study, args.models, args.optimizers, args.out_dir, data_dir=args.data_dir,
                            force=args.force, log=log)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.plot:
        plot(records, args.out_dir / "sfn.png")
    text = summary_text(records)
    atomic_write(args.out_dir / "summary.md", text)
    log("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
