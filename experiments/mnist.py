"""The δ-GClip KAN study on MNIST: AdamW, Adam, δ-GClip, GClip and SGD on a [784, 64, 10] KAN.

Defaults are the published protocol (Tucat et al., TMLR 2025, arXiv 2404.08624): G=5, k=3,
images ``(x/255 - 0.5)/0.5`` flattened, batch 64 reshuffled every epoch with the last partial
batch kept, the test set as validation, 10 epochs, seeds 100-500, cross-entropy; optimisers as
in :data:`experiments.mnist_protocol.ALGORITHMS`. All seeds of an algorithm train in one
compiled program (``vmap``), every epoch being one ``lax.scan``.

Configuration: :class:`MnistConfig` (a frozen dataclass; :data:`PRESETS` ``full``, the
published protocol, and ``quick``), turned into flags by :mod:`experiments._cli`: ``--algos``,
``--seeds``, ``--epochs``, ``--hidden``, ... and one flag per hyperparameter
(``--dgclip-gamma 0.3``, ``--adamw-lr 3e-3``); ``--quick`` starts from the smoke preset.

Outputs in ``--out-dir``: ``<algo>_seed<seed>.json`` per run, ``summary.json``, ``summary.md``
and the 2x2 figure ``mnist_study.png``, all written atomically. Resume: after every epoch the
training state of the running algorithm (params, grid, optimiser state, PRNG keys, history) is
checkpointed atomically to ``checkpoints/<algo>_seeds<...>.msgpack``; a rerun of the same
command skips the finished runs and continues an interrupted one from its last epoch, with
the same numbers as an uninterrupted run.

Usage::

    python -m experiments.mnist --data-dir ../shared/data/mnist        # the full study
    python -m experiments.mnist --quick --data-dir ../shared/data/mnist  # a smoke run

More devices (see README, "More devices"): ``--devices N`` (default: all devices) spreads each
algorithm's vmapped seeds over devices and splits every batch over the rest
(:func:`kan_jax.training.sharding.plan_mesh`); ``--coordinator-address``, ``--num-processes`` and
``--process-id`` (or ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``)
start the same study on several processes or hosts, each writing only its own runs (seed ``j``
of the list goes to process ``j mod P``) and process 0 writing the summary of all of them.
Epoch checkpoints hold the state gathered to the host and are written by process 0 alone (in
its ``--out-dir``); on resume process 0 reads them and sends them to the other processes, and
the state is laid out on the mesh again, so a multi-process run resumes from process 0's
``--out-dir`` (a shared folder is not needed for the checkpoints, but finished runs written by
other processes are only seen as finished if process 0 sees them: use a shared ``--out-dir``
to avoid recomputing them).
"""
from __future__ import annotations

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

from experiments._cli import build_parser, option, parse
from experiments._env import device_description
from experiments.mnist_protocol import ALGORITHMS, HYPERPARAMETERS, hyperparameters, make_optimizer
from kan_jax import KAN
from kan_jax.training import sharding
from kan_jax.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from kan_jax.data import DataError, load_mnist, preprocess_mnist
from kan_jax.io import atomic_write, write_json
from kan_jax.training import init_train_state, make_epoch_fn, num_batches

DEFAULT_ALGOS = ("adamw", "adam", "dgclip", "gclip", "gd")
DEFAULT_SEEDS = (100, 200, 300, 400, 500)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that determines the numbers of a run (the resume key)."""

    epochs: int = option(10, help="training epochs")
    batch_size: int = option(64, help="training batch size (the last partial batch is kept)")
    eval_batch_size: int = option(64, help="evaluation batch size")
    hidden: int = option(64, help="hidden width of the [784, H, 10] KAN")
    grid_size: int = option(5, help="spline grid intervals G")
    spline_order: int = option(3, help="spline order k")
    train_subset: Optional[int] = option(None, help="use only the first N training images")
    test_subset: Optional[int] = option(None, help="use only the first N test images")

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


def checkpoint_path(directory: Path, algo: str, seeds: Sequence[int]) -> Path:
    """The epoch checkpoint of ``seeds`` of ``algo`` trained in one program."""
    return directory / f"{algo}_seeds{'-'.join(str(s) for s in seeds)}.msgpack"


def _restore(path: Path, fresh: Any, meta_key: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """``(tree, metadata)`` of the checkpoint at ``path`` if it continues this run, else None."""
    if not path.exists():
        return None
    try:
        tree, meta = load_checkpoint(path, fresh)
    except CheckpointError as err:
        print(f"warning: {err}; starting these seeds again", file=sys.stderr)
        return None
    if {k: meta.get(k) for k in meta_key} != meta_key:
        raise SystemExit(
            f"error: {path} was made with another configuration:\n  stored "
            f"{ {k: meta.get(k) for k in meta_key} }\n  asked  {meta_key}\n"
            "use another --out-dir, or --force to start again"
        )
    return tree, meta


def _share_restored(found: tuple[Any, dict[str, Any]] | None, fresh: Any) -> tuple[Any, dict[str, Any]] | None:
    """Process 0's restored checkpoint (or None) in every process; one process: ``found`` itself.

    Only process 0 reads and writes epoch checkpoints; the others receive its tree and metadata
    (``multihost_utils.broadcast_one_to_all``, a collective: every process calls this), so all
    continue from the same epoch with the same state.
    """
    if jax.process_count() == 1:
        return found
    from jax.experimental import multihost_utils

    payload = b"" if found is None else json.dumps(found[1]).encode()
    size = int(multihost_utils.broadcast_one_to_all(np.array(len(payload), np.int32)))
    if size == 0:
        return None
    buf = np.frombuffer(payload, np.uint8) if found is not None else np.zeros(size, np.uint8)
    meta = json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8)))
    tree = multihost_utils.broadcast_one_to_all(found[0] if found is not None else fresh)
    return jax.tree.map(np.asarray, tree), meta


def _history_rows(epoch: int, lr: float, seconds: float, metrics: dict[str, np.ndarray], n: int) -> list[dict[str, Any]]:
    """One history row per seed of a group from an epoch's metrics (NaN written as None)."""
    rows = []
    for j in range(n):
        row = {"epoch": epoch + 1, "lr": lr, "seconds": seconds}
        for name, values in metrics.items():
            value = float(values[j])
            row[name] = None if math.isnan(value) else value
        rows.append(row)
    return rows


def train_algorithm(
    algo: str,
    seeds: Sequence[int],
    config: StudyConfig,
    hp: dict[str, Any],
    data: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    *,
    vmap_seeds: bool = True,
    progress: bool = True,
    checkpoint_dir: Optional[Path] = None,
    devices: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Train ``seeds`` of one algorithm; returns one record (per-epoch metrics) per seed.

    Each seed's PRNG key ``jax.random.key(seed)`` is split into an initialisation key and a
    shuffling key; epoch ``e`` shuffles with ``fold_in(shuffle_key, e)``. With ``vmap_seeds``
    all seeds run in one compiled program; otherwise one after the other, unbatched (same
    numbers up to float rounding).

    With ``checkpoint_dir``, the state of each program (params, grid, optimiser state, the
    shuffling keys, the history so far) is written there atomically after every epoch
    (:func:`checkpoint_path`), and a checkpoint found there is continued from: the epochs
    already done are not run again and the numbers equal an uninterrupted run's.

    ``devices``: run on a mesh of that many devices (seeds split over devices, then batches;
    :func:`kan_jax.training.sharding.plan_mesh`), same numbers up to float rounding; ``None``: the default
    device alone. Checkpoints then hold the state gathered to the host (written by process 0
    only) and a resumed state is laid out on the mesh again; with several processes process 0
    reads the checkpoint and broadcasts it.
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
    rank = jax.process_index()
    # -------------------------------------------------------------------------------------------
    epoch_fn = make_epoch_fn(model, tx, config.batch_size, config.eval_batch_size, vmap_seeds=batched, mesh=mesh)
    init = lambda k: init_train_state(model, tx, k, sample_x)  # noqa: E731
    fold = jax.random.fold_in
    if batched:
        init, fold = jax.vmap(init), jax.vmap(fold, in_axes=(0, None))
    init = jax.jit(init)
    history: list[list[dict[str, float]]] = [[] for _ in seeds]
    bar = _progress_bar(total=config.epochs * len(groups), desc=f"{algo:>6}", enabled=progress and rank == 0)
    elapsed = 0.0
    for group in groups:
        start = time.perf_counter()
        select = np.array(group) if batched else group[0]
        state = init(init_keys[select])
        shuffle = shuffle_keys[select]
        first = 0
        group_seeds = [seeds[i] for i in group]
        path = None if checkpoint_dir is None else checkpoint_path(checkpoint_dir, algo, group_seeds)
        meta_key = {"algo": algo, "seeds": group_seeds, "config": dataclasses.asdict(config), "hyperparameters": hp}
        fresh = jax.device_get((state, jax.random.key_data(shuffle)))  # host values (the restore template)
        found = None
        if path is not None:
            found = _restore(path, fresh, meta_key) if rank == 0 else None
            found = _share_restored(found, fresh)  # several processes: process 0's checkpoint for all
        if found is not None:
            (state, shuffle), meta = found
            state, shuffle = jax.device_put(state), jax.random.wrap_key_data(jnp.asarray(shuffle))
            first = meta["epoch"]
            for i, rows in zip(group, meta["history"]):
                history[i] = rows
            elapsed += meta["seconds"]
            bar.update(first)
            if rank == 0:
                print(f"{algo:>6}: seeds {group_seeds} resumed after epoch {first} from {path}", file=sys.stderr)
        if mesh is not None:  # lay the (fresh or resumed) state out on the mesh
            state = jax.device_get(state)
            state = sharding.place(state, sharding.state_shardings(mesh, tx, state, seed_axis=batched))
        for epoch in range(first, config.epochs):
            t0 = time.perf_counter()
            epoch_key = fold(shuffle, epoch)
            if mesh is not None:
                epoch_key = sharding.place(epoch_key, key_sharding)
            state, metrics = epoch_fn(state, epoch_key, x_train, y_train, x_test, y_test)
            metrics = {name: np.reshape(values, -1) for name, values in sharding.gather(metrics).items()}
            seconds = time.perf_counter() - t0
            for i, row in zip(group, _history_rows(epoch, float(schedule(epoch * steps)), seconds, metrics, len(group))):
                history[i].append(row)
            if path is not None:
                # The sharded state gathered to the host (a collective: every process takes part);
                # the shuffling keys are not on the mesh (the same local copy in every process).
                host = (sharding.gather(state), np.asarray(jax.random.key_data(shuffle)))
                so_far = time.perf_counter() - start + (meta["seconds"] if found is not None else 0.0)
                if rank == 0:
                    save_checkpoint(path, host,
                                    {**meta_key, "epoch": epoch + 1, "history": [history[i] for i in group], "seconds": so_far})
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(np.mean(metrics['train_loss'])):.4f}",
                acc=f"{float(np.mean(metrics['train_acc'])):.4f}",
                val_acc=f"{float(np.mean(metrics['val_acc_batchmean'])):.4f}",
            )
        elapsed += time.perf_counter() - start
    bar.close()
    device = device_description()
    return [
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
                "device": device,
                "devices": [str(jax.devices()[0])] if mesh is None else sharding.mesh_device_names(mesh),
                "mesh": None if mesh is None else {k: int(v) for k, v in mesh.shape.items()},
                "processes": jax.process_count(),
            },
        }
        for i, seed in enumerate(seeds)
    ]


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


# ------------------------------------------------------------------------------------------
# Configuration and command line
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScheduledHP:
    """Hyperparameters of AdamW, Adam and SGD (ExponentialLR per epoch)."""

    lr: float = option(help="learning rate")
    weight_decay: float = option(help="weight decay")
    decay: float = option(help="per-epoch learning-rate decay (1 = off)")


@dataclasses.dataclass(frozen=True)
class ClipHP:
    """Hyperparameters of δ-GClip and GClip (constant learning rate)."""

    lr: float = option(help="learning rate")
    weight_decay: float = option(help="weight decay")
    gamma: float = option(help="γ (clipping threshold)")
    delta: float = option(help="δ (floor of the clipping factor)")


def _published(cls: type, algo: str) -> Any:
    return cls(**{f.name: ALGORITHMS[algo][f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class MnistConfig:
    """Everything ``python -m experiments.mnist`` takes; :data:`PRESETS` names two."""

    algos: tuple[str, ...] = option(DEFAULT_ALGOS, choices=sorted(ALGORITHMS), help="algorithms to run")
    seeds: tuple[int, ...] = option(DEFAULT_SEEDS, help="seeds")
    study: StudyConfig = option(default_factory=StudyConfig, prefix="")
    adamw: ScheduledHP = option(default_factory=lambda: _published(ScheduledHP, "adamw"), help="AdamW")
    adam: ScheduledHP = option(default_factory=lambda: _published(ScheduledHP, "adam"), help="Adam (L2 added to the gradient)")
    dgclip: ClipHP = option(default_factory=lambda: _published(ClipHP, "dgclip"), help="δ-GClip")
    gclip: ClipHP = option(default_factory=lambda: _published(ClipHP, "gclip"), help="GClip")
    gd: ScheduledHP = option(default_factory=lambda: _published(ScheduledHP, "gd"), help="SGD (L2 added to the gradient)")
    data_dir: Optional[Path] = option(
        None, help="folder with the four MNIST IDX .gz files (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    out_dir: Path = option(Path("runs/mnist"), help="output folder")
    vmap: Optional[bool] = option(
        None,
        help="train the seeds of an algorithm batched in one program (--vmap) or one after the other "
        "(--no-vmap); default: batched on accelerators, one after the other on a CPU (faster there)",
    )
    plot: bool = option(True, flag="--no-plot", help="do not draw the figure")
    progress: bool = option(True, flag="--no-progress", help="no progress bars")
    force: bool = option(False, help="recompute runs already in --out-dir")
    # --- more devices (issue 12): not part of the resume key (same numbers up to rounding) ----
    devices: Optional[int] = option(
        None, help="devices to run on (default: all; seeds are spread over them, then batches)")
    coordinator_address: Optional[str] = option(
        None, help="host:port of process 0 for a multi-process run (else $JAX_COORDINATOR_ADDRESS)")
    num_processes: Optional[int] = option(None, help="processes in a multi-process run (else $JAX_NUM_PROCESSES)")
    process_id: Optional[int] = option(None, help="this process's id, 0 ... P-1 (else $JAX_PROCESS_ID)")

    def __post_init__(self) -> None:
        if self.devices is not None and self.devices < 1:
            raise ValueError(f"--devices: the number of devices must be >= 1, got {self.devices}")
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"--num-processes must be >= 1, got {self.num_processes}")
        if not self.algos:
            raise ValueError("--algos needs at least one algorithm")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct, got {list(self.seeds)}")
        overrides = self.overrides
        for algo in self.algos:
            make_optimizer(algo, 1, **{k: v for k, v in hyperparameters(algo, overrides).items() if k in HYPERPARAMETERS})

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        """``{algo: {name: value}}`` for :func:`~experiments.mnist_protocol.hyperparameters`."""
        return {algo: dataclasses.asdict(getattr(self, algo)) for algo in ALGORITHMS}


#: ``full``: the published protocol; ``quick``: a smoke run (2 seeds, 1 epoch, 2,048 / 1,024 images).
PRESETS = {
    "full": MnistConfig(),
    "quick": MnistConfig(seeds=(100, 200), study=StudyConfig(epochs=1, train_subset=2048, test_subset=1024)),
}


_PARSER_KWARGS = dict(prog="python -m experiments.mnist",
                      description="AdamW, Adam, δ-GClip, GClip and SGD on a [784, 64, 10] KAN "
                                  "(published protocol by default).")


def parse_args(argv: Optional[Sequence[str]] = None) -> MnistConfig:
    """The configuration from a command line (usage errors exit with status 2)."""
    return parse(MnistConfig, PRESETS, argv, **_PARSER_KWARGS)


def _usage_error(message: str) -> None:
    """Exit with the usage line, ``message`` and status 2 (as a flag error would)."""
    build_parser(MnistConfig, PRESETS, **_PARSER_KWARGS).error(message)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of this study's writers left by a killed process (never complete)."""
    for pattern in (".*_seed*.tmp.json", "checkpoints/.*_seeds*.tmp.msgpack", ".summary.*.tmp.*", ".mnist_study.*.tmp.png"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)


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
    several processes (:func:`kan_jax.training.sharding.initialize_distributed`) every process runs the same
    program, writes only its own runs (seed ``j`` of ``seeds`` goes to process ``j mod P``) and
    process 0 writes the summary, the figure and the epoch checkpoints; which runs are already
    done is process 0's view of ``out_dir`` (use a shared folder, or other processes' runs are
    recomputed).
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
    ckpt_dir = out_dir / "checkpoints"
    if rank == 0:
        _remove_stale_temporaries(out_dir)
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
            if force and rank == 0:
                for old in ckpt_dir.glob(f"{algo}_seeds*.msgpack"):
                    old.unlink()
            for record in trainer(algo, todo, config, hp, data, vmap_seeds=vmap_seeds, progress=progress,
                                  checkpoint_dir=ckpt_dir, **extra):
                if owner[record["seed"]] == rank:
                    write_json(run_path(out_dir, algo, record["seed"]), record)
                done[record["seed"]] = record
            if rank == 0:
                for finished in ckpt_dir.glob(f"{algo}_seeds*.msgpack"):  # the JSON files hold it all now
                    finished.unlink()
            seconds[algo] = time.perf_counter() - t0
        elif rank == 0:
            print(f"{algo:>6}: all {len(seeds)} seeds already in {out_dir}, skipped")
        records[algo] = [done[s] for s in seeds]
    if rank == 0 and ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
        ckpt_dir.rmdir()
    total = time.perf_counter() - start
    rows = summarize(records, seconds)
    if rank != 0:  # process 0 writes the summary of everyone's runs
        return rows
    device = device_description()
    used = [str(d) for d in jax.devices()[: devices or 1]]
    where = device if len(used) == 1 else f"{len(used)} devices ({used[0]} ...) in {nproc} process(es); {device}"
    table = summary_markdown(rows, total, where)
    atomic_write(out_dir / "summary.md", table)
    write_json(out_dir / "summary.json",
               {"rows": rows, "total_seconds": total, "device": device, "devices": used, "processes": nproc})
    print(table)
    if plot:
        from experiments.mnist_protocol import plot_training_curves

        fig_path = out_dir / "mnist_study.png"
        plot_training_curves(records, fig_path, model=f"KAN [784, {config.hidden}, 10]")
        print(f"figure: {fig_path}")
    return rows


def default_vmap_seeds(backend: Optional[str] = None, devices: Optional[int] = None) -> bool:
    """Whether to batch seeds with ``vmap`` by default: on accelerators yes, on a CPU no.

    On the 2-core CPU one seed at a time was 1.45x faster per seed than 5 vmapped seeds
    (batched matrix products are slower there; ``benchmarks/RESULTS.md``); on a GPU or TPU one
    program for all seeds fills the device. On a mesh of several ``devices`` yes on every
    backend: the vmapped seed axis is what :func:`kan_jax.training.sharding.plan_mesh` spreads over them.
    """
    if devices is not None and devices > 1:
        return True
    return (jax.default_backend() if backend is None else backend) != "cpu"


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    # More devices (issue 12): join a multi-process run first (before any computation), then
    # check --devices (a usage error naming how many devices there are).
    try:
        sharding.initialize_distributed(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
        devices = jax.device_count() if cfg.devices is None else cfg.devices
        sharding.make_mesh(devices)
    except ValueError as err:
        _usage_error(str(err))
    # One device in one process: the plain single-device program (no mesh).
    devices = None if devices == 1 and jax.process_count() == 1 else devices
    try:
        run_study(
            cfg.algos,
            cfg.seeds,
            cfg.study,
            cfg.overrides,
            cfg.out_dir,
            data_dir=cfg.data_dir,
            vmap_seeds=default_vmap_seeds(devices=devices) if cfg.vmap is None else cfg.vmap,
            force=cfg.force,
            progress=cfg.progress,
            plot=cfg.plot,
            devices=devices,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = cfg.out_dir if jax.process_count() == 1 else f"process 0's --out-dir ({cfg.out_dir} in process 0)"
        print(f"\ninterrupted: finished epochs are saved in {where}; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
