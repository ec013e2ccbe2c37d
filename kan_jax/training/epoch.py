"""Compiled training and evaluation: one ``lax.scan`` per epoch, seeds batched with ``vmap``.

The data live on the device for the whole run. An epoch draws a permutation of the training
set, cuts it into ``ceil(N / batch_size)`` batches (the last one partial, as PyTorch's
``DataLoader(drop_last=False)``: it is padded to full size and masked, so its gradient is the
mean over its real samples only) and runs every step inside one compiled ``lax.scan``; the
host sees only per-epoch metrics. :func:`make_epoch_fn` vmaps the whole epoch over a leading
seed axis, so one compiled program trains several seeds of an algorithm at once.

The grid of the KAN layers is part of :class:`TrainState` but not of the optimised params.

Every function takes an optional ``mesh`` (:mod:`kan_jax.training.sharding`): batches are
then split over its ``"data"`` axis and vmapped seeds over its ``"seeds"`` axis, and ``jit``
inserts the gradient all-reduce; the numbers are those of one device up to float rounding.

Nothing here knows a particular study: the optimisers of the MNIST study and its figure live in
``experiments/mnist_protocol.py``.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from kan_jax import KAN
    >>> from kan_jax.training import init_train_state, train_epoch
    >>> model, tx = KAN((4, 3)), optax.adam(1e-3)
    >>> x, y = jnp.ones((10, 4)), jnp.zeros(10, jnp.int32)
    >>> state = init_train_state(model, tx, jax.random.key(0), x[:1])
    >>> state, metrics = train_epoch(model, tx, state, jax.random.key(1), x, y, batch_size=4)
    >>> sorted(metrics)
    ['clip_factor', 'grad_norm', 'train_acc', 'train_loss']
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from kan_jax.training.sharding import DATA_AXIS, SEED_AXIS, constrain_batch

__all__ = [
    "TrainState",
    "init_train_state",
    "train_epoch",
    "evaluate",
    "make_epoch_fn",
    "num_batches",
]

class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree).

    Attributes:
        params: the model's ``"params"`` collection (what the optimiser updates).
        grid: the model's ``"grid"`` collection (KAN knot grids; state, never optimised).
        opt_state: the optax state.
    """

    params: Any
    grid: Any
    opt_state: Any


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, sample_x: jax.Array) -> TrainState:
    """Initialise the model on ``sample_x`` and the optimiser on its params.

    Args:
        model: a Linen model, possibly with a ``"grid"`` collection (a KAN).
        tx: the optimiser.
        key: the PRNG key of the initialisation.
        sample_x: an input batch (its shape sets the parameters' shapes).

    Returns:
        A :class:`TrainState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from kan_jax import KAN
        >>> from kan_jax.training import init_train_state
        >>> state = init_train_state(KAN((4, 3)), optax.adam(1e-3), jax.random.key(0), jnp.zeros((1, 4)))
        >>> sorted(state.grid)
        ['layers_0']
    """
    variables = model.init(key, sample_x)
    params = variables["params"]
    return TrainState(params, variables.get("grid", {}), tx.init(params))


def num_batches(n: int, batch_size: int) -> int:
    """Batches per epoch with the last partial batch kept: ``ceil(n / batch_size)``.

    Raises:
        ValueError: ``batch_size`` is below 1.

    Example:
        >>> num_batches(60_000, 64)
        938
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return math.ceil(n / batch_size)


def _batched_indices(order: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Cut an index order into ``(steps, batch_size)`` with a validity mask (last batch padded)."""
    n = order.shape[0]
    steps = num_batches(n, batch_size)
    pad = steps * batch_size - n
    idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(steps, batch_size)
    mask = (jnp.arange(steps * batch_size) < n).reshape(steps, batch_size)
    return idx, mask


def _masked_metrics(logits: jax.Array, y: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mean loss, mean accuracy, count) of one batch over its valid samples."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
    correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    m = mask.astype(jnp.float32)
    count = m.sum()
    return (ce * m).sum() / count, (correct * m).sum() / count, count


def _clip_stats(opt_state: Any) -> tuple[jax.Array, jax.Array]:
    """(factor, grad_norm) recorded by a δ-GClip state; NaN for other optimisers."""
    factor = optax.tree.get(opt_state, "factor", default=None)
    norm = optax.tree.get(opt_state, "grad_norm", default=None)
    nan = jnp.float32(jnp.nan)
    return (nan if factor is None else factor), (nan if norm is None else norm)


def train_epoch(
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    key: jax.Array,
    x: jax.Array,
    y: jax.Array,
    batch_size: int,
    mesh: Optional[Mesh] = None,
    extra_args: Optional[Callable[..., dict[str, Any]]] = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One epoch of minibatch training with cross-entropy, as a single ``lax.scan``.

    Args:
        model: the Linen classifier (it returns logits).
        tx: the optimiser.
        state: the current :class:`TrainState`.
        key: the PRNG key of this epoch's shuffle.
        x: training inputs ``(N, ...)``, already on the device.
        y: integer labels ``(N,)``.
        batch_size: the batch size (static); the last batch holds ``N mod batch_size``
            samples if that is not zero.
        mesh: an optional :class:`jax.sharding.Mesh`
            (:func:`kan_jax.training.sharding.make_mesh`): every batch is split over its
            ``"data"`` axis (``batch_size`` must be divisible by its size) and the compiler
            all-reduces the gradient. The loss stays the masked mean over the whole batch, so
            clipping norms are those of the full gradient. Place ``state`` and the data with
            :func:`kan_jax.training.sharding.place`.
        extra_args: For an optimiser that takes more than the gradient
            (:class:`optax.GradientTransformationExtraArgs`):
            ``extra_args(params, grid, x, y, key) -> dict`` of the keyword arguments of this
            step's ``tx.update`` (for instance ``hvp_fn`` of :func:`kan_jax.optim.sfn` on a batch
            drawn with ``key``); ``key`` is the step's own, drawn from ``fold_in(key, 1)`` so that
            the shuffle is the same with and without ``extra_args``.

    Returns:
        ``(state, metrics)``: ``metrics`` holds the means over batches of the batch loss and
        accuracy (``train_loss``, ``train_acc``, PyTorch's running average) and, for δ-GClip,
        of the clipping factor and gradient norm (``clip_factor``, ``grad_norm``; NaN for
        other optimisers).
    """
    idx, mask = _batched_indices(jax.random.permutation(key, x.shape[0]), batch_size)
    idx, mask = constrain_batch(idx, mesh, axis=1), constrain_batch(mask, mesh, axis=1)

    def loss_fn(params, xb, yb, mb):
        logits = model.apply({"params": params, "grid": state.grid}, xb)
        loss, acc, _ = _masked_metrics(logits, yb, mb)
        return loss, acc

    def step(carry, batch):
        params, opt_state = carry
        bi, mb, step_key = batch
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x[bi], y[bi], mb)
        kwargs = {} if extra_args is None else extra_args(params, state.grid, x, y, step_key)
        updates, opt_state = tx.update(grads, opt_state, params, **kwargs)
        params = optax.apply_updates(params, updates)
        factor, norm = _clip_stats(opt_state)
        return (params, opt_state), jnp.stack([loss, acc, factor, norm])

    step_keys = None if extra_args is None else jax.random.split(jax.random.fold_in(key, 1), idx.shape[0])
    (params, opt_state), per_step = jax.lax.scan(step, (state.params, state.opt_state), (idx, mask, step_keys))
    means = per_step.mean(0)
    metrics = dict(train_loss=means[0], train_acc=means[1], clip_factor=means[2], grad_norm=means[3])
    return TrainState(params, state.grid, opt_state), metrics


def evaluate(
    model: nn.Module, params: Any, grid: Any, x: jax.Array, y: jax.Array, batch_size: int,
    mesh: Optional[Mesh] = None,
) -> dict[str, jax.Array]:
    """Loss and accuracy on a dataset in batches, as one ``lax.scan``.

    Args:
        model: the Linen classifier.
        params: its ``"params"`` collection.
        grid: its ``"grid"`` collection (``{}`` for a model without one).
        x: inputs ``(N, ...)``.
        y: integer labels ``(N,)``.
        batch_size: the batch size (static).
        mesh: an optional mesh; every batch is split over its ``"data"`` axis (as in
            :func:`train_epoch`).

    Returns:
        The mean of per-batch means (``val_loss_batchmean``, ``val_acc_batchmean``: what a
        PyTorch loop averaging ``loss.item()`` over a ``DataLoader`` reports, the last partial
        batch weighing as much as a full one) and the exact per-sample means (``val_loss``,
        ``val_acc``).
    """
    idx, mask = _batched_indices(jnp.arange(x.shape[0]), batch_size)
    idx, mask = constrain_batch(idx, mesh, axis=1), constrain_batch(mask, mesh, axis=1)

    def step(_, batch):
        bi, mb = batch
        logits = model.apply({"params": params, "grid": grid}, x[bi])
        loss, acc, count = _masked_metrics(logits, y[bi], mb)
        return None, jnp.stack([loss, acc, count])

    _, per_batch = jax.lax.scan(step, None, (idx, mask))
    loss, acc, count = per_batch[:, 0], per_batch[:, 1], per_batch[:, 2]
    total = count.sum()
    return dict(
        val_loss_batchmean=loss.mean(),
        val_acc_batchmean=acc.mean(),
        val_loss=(loss * count).sum() / total,
        val_acc=(acc * count).sum() / total,
    )


def make_epoch_fn(
    model: nn.Module,
    tx: optax.GradientTransformation,
    batch_size: int,
    eval_batch_size: Optional[int] = None,
    vmap_seeds: bool = True,
    mesh: Optional[Mesh] = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """A compiled ``epoch(state, key, x_train, y_train, x_val, y_val) -> (state, metrics)``.

    One call trains one epoch (:func:`train_epoch`) then evaluates (:func:`evaluate`). The
    state argument is donated (its buffers are reused for the result).

    Args:
        model: the Linen classifier.
        tx: the optimiser.
        batch_size: the training batch size.
        eval_batch_size: the evaluation batch size (default ``batch_size``).
        vmap_seeds: every leaf of ``state`` and ``key`` has a leading seed axis and the data
            are shared: all seeds run in one program.
        mesh: an optional mesh (:mod:`kan_jax.training.sharding`): the seed axis is split
            over ``"seeds"`` (``jax.vmap(..., spmd_axis_name="seeds")``; place state and keys
            with :func:`kan_jax.training.sharding.state_shardings` and ``seed_sharding``) and
            every batch over ``"data"``; the data are replicated. The numbers equal the
            one-device program's up to float rounding.

    Returns:
        The jitted epoch function.

    Raises:
        ValueError: a batch size is not divisible by the mesh's data-parallel size.
    """
    eval_batch_size = eval_batch_size or batch_size
    if mesh is not None:
        for name, b in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if b % mesh.shape[DATA_AXIS]:
                raise ValueError(
                    f"{name} {b} is not divisible by the mesh's {mesh.shape[DATA_AXIS]} data-parallel devices"
                )

    def epoch(state, key, x_train, y_train, x_val, y_val):
        state, metrics = train_epoch(model, tx, state, key, x_train, y_train, batch_size, mesh)
        metrics.update(evaluate(model, state.params, state.grid, x_val, y_val, eval_batch_size, mesh))
        return state, metrics

    if vmap_seeds:
        spmd = SEED_AXIS if mesh is not None else None
        epoch = jax.vmap(epoch, in_axes=(0, 0, None, None, None, None), spmd_axis_name=spmd)
    return jax.jit(epoch, donate_argnums=(0,))
