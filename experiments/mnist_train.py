"""Training one algorithm of the MNIST study: its configuration, the seeds' loop and epoch checkpoints.

:func:`train_algorithm` trains the seeds of one algorithm (vmapped in one program, or one
after the other), on one device or a mesh (:mod:`kan_jax.training.sharding`), writing an epoch
checkpoint after every epoch and continuing from one found (:func:`checkpoint_path`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments._cli import option
from experiments._env import device_description
from experiments.mnist_protocol import HYPERPARAMETERS, make_optimizer
from kan_jax import KAN
from kan_jax.layer import BASES, KANLayerConfig
from kan_jax.training import init_train_state, make_epoch_fn, num_batches, sharding
from kan_jax.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["StudyConfig", "checkpoint_path", "train_algorithm"]


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that determines the numbers of a run (the resume key)."""

    epochs: int = option(10, help="training epochs")
    batch_size: int = option(64, help="training batch size (the last partial batch is kept)")
    eval_batch_size: int = option(64, help="evaluation batch size")
    hidden: int = option(64, help="hidden width of the [784, H, 10] KAN")
    grid_size: int = option(5, help="spline grid intervals G")
    spline_order: int = option(3, help="spline order k")
    basis: str = option("bspline", choices=BASES, help="basis family of the KAN layers (grid size: its resolution)")
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
        try:
            KANLayerConfig(grid_size=self.grid_size, spline_order=self.spline_order, basis=self.basis)
        except ValueError as err:
            raise ValueError(f"--basis {self.basis}: {err}") from None

    def key(self) -> dict[str, Any]:
        """The fields as a dict, the resume key of records and checkpoints (B-spline runs omit ``basis``)."""
        fields = dataclasses.asdict(self)
        if fields["basis"] == "bspline":
            del fields["basis"]
        return fields


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
    model = KAN(
        [x_train.shape[1], config.hidden, 10], grid_size=config.grid_size, spline_order=config.spline_order, basis=config.basis
    )
    keys = [jax.random.split(jax.random.key(s)) for s in seeds]
    init_keys = jnp.stack([k[0] for k in keys])
    shuffle_keys = jnp.stack([k[1] for k in keys])
    # One program for all seeds, or one seed at a time. A single seed runs unbatched: XLA's CPU
    # backend handles a batch dimension of size 1 in its matrix products less well.
    batched = vmap_seeds and len(seeds) > 1
    groups = [list(range(len(seeds)))] if batched else [[i] for i in range(len(seeds))]
    # more devices: a mesh, and data/state/keys placed on it
    mesh, sample_x = None, x_train[:1]
    if devices is not None:
        mesh = sharding.plan_mesh(devices, len(groups[0]), (config.batch_size, config.eval_batch_size))
        data = sharding.place(tuple(np.asarray(a) for a in data), sharding.replicated(mesh))
        x_train, y_train, x_test, y_test = data
    key_sharding = None if mesh is None else (sharding.seed_sharding(mesh) if batched else sharding.replicated(mesh))
    rank = jax.process_index()
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
        meta_key = {"algo": algo, "seeds": group_seeds, "config": config.key(), "hyperparameters": hp}
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
            "config": config.key(),
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


