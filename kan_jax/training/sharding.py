r"""Beyond one device: meshes, shardings and multi-process start-up for training and analysis.

JAX's own runtime is the distributed engine: a :class:`jax.sharding.Mesh` names the devices,
a :class:`jax.sharding.NamedSharding` says how each array is laid out over them, and
:func:`jax.jit` inserts the collectives (the all-reduce of a data-parallel gradient, the
reduction of a dataset Hessian-vector product) from those layouts. Several processes (hosts)
join one global mesh through :func:`jax.distributed.initialize`; after that the same program
runs unchanged.

Meshes built here have three named axes, any of which may have size 1:

* ``"seeds"``: the leading axis of a vmapped seed batch (independent runs: no communication);
* ``"data"``: the batch axis of every minibatch (data parallelism: one gradient all-reduce
  per step);
* ``"model"``: the output axis of the large layer weights (the last axis of
  ``spline_weight`` ``(in, G+k, out)`` and ``spline_scaler`` ``(in, out)``, the first of
  ``base_weight`` ``(out, in)``), for layers too large for one device's memory.

Data parallelism keeps the meaning of a step exactly: a minibatch of ``B`` samples is split into
``D`` slices of ``B / D``; the loss is the masked mean over all ``B`` (the padded last batch
keeps its mask), so the gradient every device applies is the all-reduced mean

.. math::

    g = \frac{1}{\sum_i m_i} \sum_{d=1}^{D} \sum_{i \in S_d} m_i \nabla \ell_i(\theta),

identical to the one-device gradient up to float rounding (the order of the sum changes).
Clipping methods (δ-GClip) compute their global norm on that averaged gradient.

The training set itself is replicated on every device (MNIST: 188 MB in float32) and each
device gathers only its slice of the shuffled indices, so a step moves no data between devices;
only the gradient (``4 P`` bytes for ``P`` float32 parameters) is reduced.

Example:
    >>> from kan_jax.training import sharding as sh
    >>> mesh = sh.make_mesh(1)
    >>> dict(mesh.shape)
    {'seeds': 1, 'data': 1, 'model': 1}

References:
    JAX documentation, "Distributed arrays and automatic parallelization" and "Multi-process
    environments" (jax.readthedocs.io).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kan_jax.layer import PARAM_OUTPUT_AXIS

__all__ = [
    "SEED_AXIS",
    "DATA_AXIS",
    "MODEL_AXIS",
    "make_mesh",
    "plan_mesh",
    "mesh_device_names",
    "replicated",
    "batch_sharding",
    "seed_sharding",
    "param_specs",
    "state_shardings",
    "place",
    "constrain_batch",
    "gather",
    "initialize_distributed",
]

SEED_AXIS = "seeds"
DATA_AXIS = "data"
MODEL_AXIS = "model"
AXES = (SEED_AXIS, DATA_AXIS, MODEL_AXIS)


def _device_list(devices: Optional[Sequence[Any]]) -> list:
    return list(jax.devices() if devices is None else devices)


def make_mesh(
    num_devices: Optional[int] = None,
    *,
    seeds: int = 1,
    model: int = 1,
    devices: Optional[Sequence[Any]] = None,
) -> Mesh:
    """A ``("seeds", "data", "model")`` mesh over the first ``num_devices`` devices.

    Args:
        num_devices: how many devices to use (default: all of :func:`jax.devices`, i.e. every
            device of every process after :func:`initialize_distributed`).
        seeds: the size of the ``"seeds"`` axis.
        model: the size of the ``"model"`` axis; the ``"data"`` axis gets
            ``num_devices // (seeds * model)``.
        devices: the devices to choose from (default :func:`jax.devices`).

    Returns:
        A mesh of shape ``(seeds, num_devices // (seeds * model), model)``.

    Raises:
        ValueError: more devices are asked for than exist (the message says how many there
            are and how to force host devices on a CPU), or the axis sizes do not divide
            ``num_devices``.

    Example:
        >>> mesh = make_mesh(1)
        >>> dict(mesh.shape)
        {'seeds': 1, 'data': 1, 'model': 1}
    """
    available = _device_list(devices)
    n = len(available) if num_devices is None else int(num_devices)
    if n < 1:
        raise ValueError(f"the number of devices must be >= 1, got {n}")
    if n > len(available):
        kinds = sorted({d.platform for d in available})
        hint = (
            f"; on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX is imported"
            if kinds == ["cpu"]
            else ""
        )
        raise ValueError(
            f"asked for {n} devices but only {len(available)} {'is' if len(available) == 1 else 'are'} "
            f"available ({', '.join(str(d) for d in available[:8])}{', ...' if len(available) > 8 else ''}){hint}"
        )
    for name, size in (("seeds", seeds), ("model", model)):
        if size < 1:
            raise ValueError(f"mesh axis {name!r} must have size >= 1, got {size}")
    if n % (seeds * model):
        raise ValueError(f"{n} devices cannot be split into seeds={seeds} x model={model} x data (not a divisor)")
    grid = np.asarray(available[:n], dtype=object).reshape(seeds, n // (seeds * model), model)
    return Mesh(grid, AXES)


def plan_mesh(
    num_devices: Optional[int],
    num_seeds: int,
    batch_sizes: Sequence[int],
    *,
    devices: Optional[Sequence[Any]] = None,
) -> Mesh:
    """The mesh for training ``num_seeds`` vmapped seeds with the given batch sizes.

    Seeds are independent, so as many devices as possible go to the ``"seeds"`` axis (the
    largest divisor of ``num_devices`` that divides ``num_seeds``); the rest split every batch
    (``"data"``), which must then divide each of ``batch_sizes``: 4 devices, 2 seeds, batch
    64 give seeds=2 x data=2; 4 devices, 5 seeds give seeds=1 x data=4.

    Args:
        num_devices: how many devices to use (``None``: all).
        num_seeds: the number of vmapped seeds.
        batch_sizes: every batch size the mesh must split.
        devices: the devices to choose from (default :func:`jax.devices`).

    Returns:
        The mesh.

    Raises:
        ValueError: no split fits (the message names the sizes).
    """
    available = _device_list(devices)
    n = len(available) if num_devices is None else int(num_devices)
    make_mesh(n, devices=available)  # validates the count
    for s in sorted((d for d in range(1, n + 1) if n % d == 0), reverse=True):
        data = n // s
        if num_seeds % s == 0 and all(b % data == 0 for b in batch_sizes):
            return make_mesh(n, seeds=s, devices=available)
    raise ValueError(
        f"cannot spread {num_seeds} seed(s) and batches of {list(batch_sizes)} over {n} devices: "
        f"the batch sizes must be divisible by {n} // (a divisor of {n} that divides the number of seeds)"
    )


def mesh_device_names(mesh: Mesh) -> list[str]:
    """``str(device)`` of every device of ``mesh``, in mesh order (what a run records)."""
    return [str(d) for d in mesh.devices.flat]


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
    """Axis ``axis`` of an ``ndim``-dimensional array split over ``"data"``, the rest replicated."""
    spec = [None] * ndim
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))


def seed_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """The leading (seed) axis split over ``"seeds"``."""
    return NamedSharding(mesh, P(SEED_AXIS, *([None] * (ndim - 1))))


def _leaf_name(path) -> str:
    last = path[-1] if path else None
    return str(getattr(last, "key", getattr(last, "name", "")))


def param_specs(params: Any, mesh: Mesh, *, seed_axis: bool = False, shard_model: bool = False) -> Any:
    """A :class:`~jax.sharding.PartitionSpec` per parameter leaf.

    Replicated, except (``shard_model``) the output axis of ``spline_weight``, ``base_weight`` and
    ``spline_scaler`` over ``"model"`` when the ``"model"`` axis divides it. With ``seed_axis``
    every leaf has a leading seed axis split over ``"seeds"``.
    """
    model_size = mesh.shape[MODEL_AXIS]
    lead = (SEED_AXIS,) if seed_axis else ()

    def spec(path, leaf):
        shape = np.shape(leaf)[len(lead):]
        rest = [None] * len(shape)
        axis = PARAM_OUTPUT_AXIS.get(_leaf_name(path))  # a KAN layer's output axis, sharded over "model"
        if shard_model and model_size > 1 and axis is not None and shape and shape[axis] % model_size == 0:
            rest[axis] = MODEL_AXIS
        return P(*lead, *rest)

    return jax.tree_util.tree_map_with_path(spec, params)


def state_shardings(mesh: Mesh, tx: Any, state: Any, *, seed_axis: bool = False, shard_model: bool = False) -> Any:
    """Shardings of a :class:`kan_jax.training.TrainState` (params, grid, optimizer state).

    Params as :func:`param_specs`; the optimizer's parameter-shaped leaves (Adam's moments) like
    the params they belong to (found with :func:`optax.tree_map_params`); everything else
    (grids, step counts, clipping statistics) replicated, with the seed axis split when
    ``seed_axis``.
    """
    import optax

    specs = param_specs(state.params, mesh, seed_axis=seed_axis, shard_model=shard_model)
    named = jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))
    other = lambda x: NamedSharding(mesh, P(SEED_AXIS) if seed_axis and np.ndim(x) else P())  # noqa: E731
    opt = optax.tree_map_params(
        tx, lambda _, s: s, state.opt_state, named, transform_non_params=other,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    grid = jax.tree.map(other, state.grid)
    return type(state)(named, grid, opt)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _place_leaf(x: Any, sharding: NamedSharding) -> jax.Array:
    if _is_key(x):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_place_leaf(jax.random.key_data(x), _key_data_sharding(sharding, x)), impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _key_data_sharding(sharding: NamedSharding, key: jax.Array) -> NamedSharding:
    extra = jax.random.key_data(key).ndim - key.ndim
    spec = tuple(sharding.spec) + (None,) * (key.ndim - len(sharding.spec)) + (None,) * extra
    return NamedSharding(sharding.mesh, P(*spec))


def place(tree: Any, shardings: Any) -> Any:
    """Lay a pytree of host values out over a mesh as global :class:`jax.Array`\\ s.

    Every process passes the *same full values* (each builds the shards its own devices hold from
    them, :func:`jax.make_array_from_callback`), so this works in one process and across hosts
    alike. PRNG key arrays are placed through their raw key data.

    Args:
        tree: arrays (NumPy, JAX or typed PRNG keys), identical in every process.
        shardings: one :class:`~jax.sharding.NamedSharding` for every leaf, or a pytree of
            shardings matching ``tree``.

    Returns:
        ``tree`` as global arrays.
    """
    if isinstance(shardings, NamedSharding):
        return jax.tree.map(lambda x: _place_leaf(x, shardings), tree)
    return jax.tree.map(_place_leaf, tree, shardings, is_leaf=_is_key)


def constrain_batch(x: jax.Array, mesh: Optional[Mesh], axis: int = 0) -> jax.Array:
    """Inside a jitted function: split axis ``axis`` of ``x`` over ``"data"`` (no-op without a mesh).

    Under :func:`jax.vmap` with ``spmd_axis_name="seeds"`` the vmapped axis is split over
    ``"seeds"`` as well.
    """
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim, axis))


def gather(tree: Any) -> Any:
    """Host NumPy copies of global arrays, whichever process holds their shards.

    One process: :func:`jax.device_get`. Several: every process receives the full values
    (:func:`jax.experimental.multihost_utils.process_allgather`, a collective: call it in every
    process).
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    local_device_ids: Optional[Sequence[int]] = None,
    timeout_s: int = 300,
) -> bool:
    """Join a multi-process JAX program (:func:`jax.distributed.initialize`), if one is asked for.

    Call it first, before any other JAX call. Values not given come from the environment:
    ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID``; if some are still missing JAX's cluster detection (SLURM, Open MPI,
    Kubernetes, Cloud TPU) fills them in. On CPUs the cross-process collectives are switched to
    Gloo (``jax_cpu_collectives_implementation="gloo"``), which JAX needs for CPU collectives
    between processes.

    Args:
        coordinator_address: ``host:port`` of process 0.
        num_processes: the number of processes.
        process_id: this process's index.
        local_device_ids: the devices this process uses (default: all it sees).
        timeout_s: how long to wait for the other processes.

    Returns:
        ``True`` if a multi-process runtime was started, ``False`` for a plain single process
        (nothing given, nothing in the environment, or ``num_processes == 1``).

    Raises:
        ValueError: a process id outside ``[0, num_processes)`` or a non-integer environment
            value.
    """
    def env_int(name: str) -> Optional[int]:
        value = os.environ.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"${name} must be an integer, got {value!r}") from None

    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else env_int("JAX_PROCESS_ID")
    if coordinator_address is None and num_processes is None and process_id is None:
        return False
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"the number of processes must be >= 1, got {num_processes}")
    if num_processes == 1 and process_id in (None, 0):
        return False
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=timeout_s,
    )
    return True
