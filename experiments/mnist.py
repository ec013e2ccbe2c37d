"""The δ-GClip KAN study on MNIST: AdamW, Adam, δ-GClip, GClip and SGD on a [784, 64, 10] KAN.

Defaults are the published protocol (Tucat et al., TMLR 2025, arXiv 2404.08624): G=5, k=3,
images ``(x/255 - 0.5)/0.5`` flattened, batch 64 reshuffled every epoch with the last partial
batch kept, the test set as validation, 10 epochs, seeds 100-500, cross-entropy; optimisers as
in :data:`kan_jax.train.ALGORITHMS`. All seeds of an algorithm train in one compiled program
(``vmap``), every epoch being one ``lax.scan``.

Outputs in ``--out-dir``: ``<algo>_seed<seed>.json`` per run (written atomically; a rerun
skips the runs already there, so an interrupted study resumes), ``summary.json``,
``summary.md`` and the 2x2 figure ``mnist_study.png``.

Usage::

    python -m experiments.mnist --data-dir ../shared/data/mnist        # the full study
    python -m experiments.mnist --quick --data-dir ../shared/data/mnist  # a smoke run

More devices (see README, "More devices"): ``--devices N`` (default: all devices) spreads each
algorithm's vmapped seeds over devices and splits every batch over the rest
(:func:`kan_jax.sharding.plan_mesh`); ``--coordinator-address``, ``--num-processes`` and
``--process-id`` (or ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``)
start the same study on several processes or hosts, each writing only its own runs (seed ``j``
of the list goes to process ``j mod P``) and process 0 writing the summary of all of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import KAN
from kan_jax import sharding
from kan_jax.checkpoint import atomic_write
from kan_jax.data import DataError, load_mnist, preprocess_mnist
from kan_jax.train import ALGORITHMS, init_train_state, make_epoch_fn, make_optimizer, num_batches

DEFAULT_ALGOS = ("adamw", "adam", "dgclip", "gclip", "gd")
DEFAULT_SEEDS = (100, 200, 300, 400, 500)
HYPERPARAMETERS = ("lr", "weight_decay", "gamma", "delta", "decay")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that determines the numbers of a run (the resume key)."""

    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 64
    hidden: int = 64
    grid_size: int = 5
    spline_order: int = 3
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "hidden", "grid_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.spline_order < 0:
            raise ValueError(f"--spline-order must be >= 0, got {self.spline_order}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def hyperparameters(algo: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The published hyperparameters of ``algo`` with the user's overrides applied."""
    hp = dict(ALGORITHMS[algo])
    hp.update({k: v for k, v in overrides.get(algo, {}).items() if v is not None})
    return hp


def run_path(out_dir: Path, algo: str, seed: int) -> Path:
    return out_dir / f"{algo}_seed{seed}.json"


def load_finished(path: Path, config: StudyConfig, hp: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The stored run at ``path`` if it exists, is complete and was made with this configuration."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"warning: {path} is unreadable ({err}); running it again", file=sys.stderr)
        return None
    if record.get("config") != dataclasses.asdict(config) or record.get("hyperparameters") != hp:
        raise SystemExit(
            f"error: {path} was made with another configuration:\n  stored {record.get('config')} "
            f"{record.get('hyperparameters')}\n  asked  {dataclasses.asdict(config)} {hp}\n"
            "use another --out-dir, or --force to overwrite"
        )
    if len(record.get("epochs", [])) != config.epochs:
        return None
    return record


def _to_device(x: np.ndarray, y: np.ndarray, n: Optional[int]) -> tuple[jax.Array, jax.Array]:
    if n is not None:
        x, y = x[:n], y[:n]
    return jnp.asarray(preprocess_mnist(x)), jnp.asarray(y.astype(np.int32))


def train_algorithm(
    algo: str,
    seeds: Sequence[int],
    config: StudyConfig,
    hp: dict[str, Any],
    data: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    *,
    vmap_seeds: bool = True,
    progress: bool = True,
    devices: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Train ``seeds`` of one algorithm; returns one record (per-epoch metrics) per seed.

    Each seed's PRNG key ``jax.random.key(seed)`` is split into an initialisation key and a
    shuffling key; epoch ``e`` shuffles with ``fold_in(shuffle_key, e)``. With ``vmap_seeds``
    all seeds run in one compiled program; otherwise one after the other, unbatched (same
    numbers up to float rounding). ``devices``: run on a mesh of that many devices (seeds split
    over devices, then batches; :func:`kan_jax.sharding.plan_mesh`), same numbers up to float
    rounding; ``None``: the default device alone.
    """
    x_train, y_train, x_test, y_test = data
    steps = num_batches(x_train.shape[0], config.batch_size)
    tx, schedule = make_optimizer(algo, steps, **{k: hp[k] for k in HYPERPARAMETERS if k in hp})
    model = KAN([x_train.shape[1], config.hidden, 10], grid_size=config.grid_size, spline_order=config.spline_order)
    keys = [jax.random.split(jax.random.key(s)) for s in seeds]
    init_keys = jnp.stack([k[0] for k in keys])
    shuffle_keys = jnp.stack([k[1] for k in keys])
    # One program for all seeds, or one seed at a time. A single seed runs unbatched: XLA's CPU
    # backend handles a batch dimension of size 1 in its matrix products much less well.
    batched = vmap_seeds and len(seeds) > 1
    groups = [list(range(len(seeds)))] if batched else [[i] for i in range(len(seeds))]
    # --- more devices (issue 12): a mesh, and data/state/keys placed on it ---------------------
    mesh, sample_x = None, x_train[:1]
    if devices is not None:
        mesh = sharding.plan_mesh(devices, len(groups[0]), (config.batch_size, config.eval_batch_size))
        data = sharding.place(tuple(np.asarray(a) for a in data), sharding.replicated(mesh))
        x_train, y_train, x_test, y_test = data
    key_sharding = None if mesh is None else (sharding.seed_sharding(mesh) if batched else sharding.replicated(mesh))
    # -------------------------------------------------------------------------------------------
    epoch_fn = make_epoch_fn(model, tx, config.batch_size, config.eval_batch_size, vmap_seeds=batched, mesh=mesh)
    init = lambda k: init_train_state(model, tx, k, sample_x)  # noqa: E731
    fold = jax.random.fold_in
    if batched:
        init, fold = jax.vmap(init), jax.vmap(fold, in_axes=(0, None))
    init = jax.jit(init)
    history: list[list[dict[str, float]]] = [[] for _ in seeds]
    bar = _progress_bar(total=config.epochs * len(groups), desc=f"{algo:>6}", enabled=progress and jax.process_index() == 0)
    start = time.perf_counter()
    for group in groups:
        select = np.array(group) if batched else group[0]
        state = init(init_keys[select])
        if mesh is not None:
            state = jax.device_get(state)
            state = sharding.place(state, sharding.state_shardings(mesh, tx, state, seed_axis=batched))
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            epoch_key = fold(shuffle_keys[select], epoch)
            if mesh is not None:
                epoch_key = sharding.place(epoch_key, key_sharding)
            state, metrics = epoch_fn(state, epoch_key, x_train, y_train, x_test, y_test)
            metrics = {name: np.reshape(values, -1) for name, values in sharding.gather(metrics).items()}
            seconds = time.perf_counter() - t0
            lr = float(schedule(epoch * steps))
            for j, i in enumerate(group):
                row = {"epoch": epoch + 1, "lr": lr, "seconds": seconds}
                for name, values in metrics.items():
                    value = float(values[j])
                    row[name] = None if math.isnan(value) else value
                history[i].append(row)
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(np.mean(metrics['train_loss'])):.4f}",
                acc=f"{float(np.mean(metrics['train_acc'])):.4f}",
                val_acc=f"{float(np.mean(metrics['val_acc_batchmean'])):.4f}",
            )
    bar.close()
    elapsed = time.perf_counter() - start
    records = []
    for i, seed in enumerate(seeds):
        records.append(
            {
                "algo": algo,
                "seed": seed,
                "config": dataclasses.asdict(config),
                "hyperparameters": hp,
                "steps_per_epoch": steps,
                "epochs": history[i],
                "final": {k: v for k, v in history[i][-1].items() if k not in ("epoch", "seconds")},
                "timing": {
                    "algorithm_seconds": elapsed,
                    "seeds_in_program": len(groups[0]),
                    "device": str(jax.devices()[0]),
                    "devices": [str(jax.devices()[0])] if mesh is None else sharding.mesh_device_names(mesh),
                    "mesh": None if mesh is None else {k: int(v) for k, v in mesh.shape.items()},
                    "processes": jax.process_count(),
                },
            }
        )
    return records


class _NoBar:
    def update(self, n: int) -> None: ...

    def set_postfix(self, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=True)


def summarize(records: dict[str, list[dict[str, Any]]], seconds: dict[str, float]) -> list[dict[str, Any]]:
    """Per algorithm: final validation accuracy (published metric and exact) mean and std over seeds."""
    rows = []
    for algo, runs in records.items():
        acc_b = np.array([r["final"]["val_acc_batchmean"] for r in runs]) * 100
        acc = np.array([r["final"]["val_acc"] for r in runs]) * 100
        loss = np.array([r["final"]["val_loss_batchmean"] for r in runs])
        rows.append(
            {
                "algo": algo,
                "seeds": [r["seed"] for r in runs],
                "val_acc_batchmean_mean": float(acc_b.mean()),
                "val_acc_batchmean_std": float(acc_b.std(ddof=1)) if len(runs) > 1 else 0.0,
                "val_acc_mean": float(acc.mean()),
                "val_acc_std": float(acc.std(ddof=1)) if len(runs) > 1 else 0.0,
                "val_loss_batchmean_mean": float(loss.mean()),
                "epoch1_val_acc_batchmean_mean": float(np.mean([r["epochs"][0]["val_acc_batchmean"] for r in runs]) * 100),
                "seconds": seconds.get(algo),
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, Any]], total_seconds: float, device: str) -> str:
    lines = [
        "| algorithm | final val acc % (mean of batch means) | exact val acc % | val acc % after epoch 1 | final val loss | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        secs = "resumed" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['algo']} | {r['val_acc_batchmean_mean']:.2f} ± {r['val_acc_batchmean_std']:.2f} "
            f"| {r['val_acc_mean']:.2f} ± {r['val_acc_std']:.2f} | {r['epoch1_val_acc_batchmean_mean']:.2f} "
            f"| {r['val_loss_batchmean_mean']:.4f} | {secs} |"
        )
    lines.append("")
    lines.append(f"Seeds {rows[0]['seeds'] if rows else []}; mean ± sample std over seeds; "
                 f"wall time {total_seconds:.1f} s on {device} (this invocation, compilation included).")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.mnist",
        description="AdamW, Adam, δ-GClip, GClip and SGD on a [784, 64, 10] KAN (published protocol by default).",
    )
    p.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), choices=sorted(ALGORITHMS), metavar="ALGO",
                   help=f"algorithms to run (default: {' '.join(DEFAULT_ALGOS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="seeds (default: 100 200 300 400 500)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64, help="hidden width of the [784, H, 10] KAN")
    p.add_argument("--grid-size", type=int, default=5)
    p.add_argument("--spline-order", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="use only the first N test images")
    for algo, hp in ALGORITHMS.items():
        for name in hp:
            if name == "decay" and hp[name] is None:
                continue
            flag = f"--{algo}-{name.replace('_', '-')}"
            what = {"lr": "learning rate", "weight_decay": "weight decay", "gamma": "γ (clipping threshold)",
                    "delta": "δ (floor of the clipping factor)", "decay": "per-epoch learning-rate decay (1 = off)"}[name]
            p.add_argument(flag, type=float, default=None, dest=f"hp_{algo}_{name}", help=f"{algo} {what} (default {hp[name]})")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with the four MNIST IDX .gz files (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/mnist"))
    p.add_argument("--quick", action="store_true",
                   help="smoke run: all algorithms, 2 seeds, 1 epoch, 2048 training and 1024 test images")
    p.add_argument("--no-vmap", action="store_true", help="train seeds one after the other instead of batched")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true", help="recompute runs already in --out-dir")
    # --- more devices (issue 12) --------------------------------------------------------------
    p.add_argument("--devices", type=int, default=None,
                   help="devices to run on (default: all; seeds are spread over them, then batches)")
    p.add_argument("--coordinator-address", default=None,
                   help="host:port of process 0 for a multi-process run (else $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, default=None, help="processes in a multi-process run (else $JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, default=None, help="this process's id, 0 ... P-1 (else $JAX_PROCESS_ID)")
    return p


def parse_config(args: argparse.Namespace) -> tuple[StudyConfig, dict[str, dict[str, Any]]]:
    if args.quick:
        args.seeds = args.seeds if args.seeds != list(DEFAULT_SEEDS) else [100, 200]
        args.epochs = 1 if args.epochs == 10 else args.epochs
        args.train_subset = args.train_subset or 2048
        args.test_subset = args.test_subset or 1024
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds must be distinct, got {args.seeds}")
    config = StudyConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        hidden=args.hidden,
        grid_size=args.grid_size,
        spline_order=args.spline_order,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
    )
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("hp_") and value is not None:
            algo, name = key[3:].split("_", 1)
            overrides.setdefault(algo, {})[name] = value
    for algo in args.algos:
        make_optimizer(algo, 1, **{k: v for k, v in hyperparameters(algo, overrides).items() if k in HYPERPARAMETERS})
    return config, overrides


def run_study(
    algos: Sequence[str],
    seeds: Sequence[int],
    config: StudyConfig,
    overrides: dict[str, dict[str, Any]],
    out_dir: Path,
    *,
    data_dir: Optional[Path] = None,
    vmap_seeds: bool = True,
    force: bool = False,
    progress: bool = True,
    plot: bool = True,
    trainer: Callable[..., list[dict[str, Any]]] = train_algorithm,
    devices: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the study; returns the summary rows and writes everything to ``out_dir``.

    ``devices``: passed to ``trainer`` (a mesh of that many devices; ``None``: one device). With
    several processes (:func:`kan_jax.sharding.initialize_distributed`) every process runs the same
    program, writes only its own runs (seed ``j`` of ``seeds`` goes to process ``j mod P``) and
    process 0 writes the summary and figure of all runs; which runs are already done is process
    0's view of ``out_dir`` (use a shared folder, or other processes' runs are recomputed).
    """
    rank, nproc = jax.process_index(), jax.process_count()
    owner = {s: j % nproc for j, s in enumerate(seeds)}
    extra = {} if devices is None else {"devices": devices}
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(data_dir)
    data = (*_to_device(mnist.x_train, mnist.y_train, config.train_subset), *_to_device(mnist.x_test, mnist.y_test, config.test_subset))
    records: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for algo in algos:
        hp = hyperparameters(algo, overrides)
        done = {} if force else {s: load_finished(run_path(out_dir, algo, s), config, hp) for s in seeds}
        if nproc > 1:  # every process must train the same seeds: process 0 decides
            from jax.experimental import multihost_utils

            mask = np.array([done.get(s) is not None for s in seeds], np.int32)
            mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
            done = {s: done.get(s) if m else None for s, m in zip(seeds, mask)}
        todo = [s for s in seeds if done.get(s) is None]
        if todo:
            t0 = time.perf_counter()
            for record in trainer(algo, todo, config, hp, data, vmap_seeds=vmap_seeds, progress=progress, **extra):
                if owner[record["seed"]] == rank:
                    atomic_write(run_path(out_dir, algo, record["seed"]), json.dumps(record, indent=1) + "\n")
                done[record["seed"]] = record
            seconds[algo] = time.perf_counter() - t0
        elif rank == 0:
            print(f"{algo:>6}: all {len(seeds)} seeds already in {out_dir}, skipped")
        records[algo] = [done[s] for s in seeds]
    total = time.perf_counter() - start
    rows = summarize(records, seconds)
    device = str(jax.devices()[0])
    used = [str(d) for d in jax.devices()[: devices or 1]]
    if rank != 0:  # process 0 writes the summary of everyone's runs
        return rows
    where = device if len(used) == 1 else f"{len(used)} devices ({used[0]} ...) in {nproc} process(es)"
    table = summary_markdown(rows, total, where)
    atomic_write(out_dir / "summary.md", table)
    summary = {"rows": rows, "total_seconds": total, "device": device, "devices": used, "processes": nproc}
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(table)
    if plot:
        from kan_jax.plotting import plot_training_curves

        fig_path = out_dir / "mnist_study.png"
        plot_training_curves(records, fig_path)
        print(f"figure: {fig_path}")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # More devices (issue 12): join a multi-process run first, then check --devices.
    try:
        sharding.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
        devices = jax.device_count() if args.devices is None else args.devices
        sharding.make_mesh(devices)  # a clear error if there are fewer
    except ValueError as err:
        parser.error(str(err))
    # One device in one process: the plain single-device program (no mesh).
    devices = None if devices == 1 and jax.process_count() == 1 else devices
    try:
        config, overrides = parse_config(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        run_study(
            args.algos,
            args.seeds,
            config,
            overrides,
            args.out_dir,
            data_dir=args.data_dir,
            vmap_seeds=not args.no_vmap,
            force=args.force,
            progress=not args.no_progress,
            plot=not args.no_plot,
            devices=devices,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are saved in {args.out_dir}; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
