"""Training: compiled epochs, optimisation loops, device meshes and checkpoints.

* :mod:`~kan_jax.training.epoch`: :class:`TrainState`, one compiled epoch per call
  (:func:`train_epoch`, :func:`make_epoch_fn` for several seeds at once), :func:`evaluate`;
* :mod:`~kan_jax.training.loops`: full-batch L-BFGS, Adam or any optax transformation on a
  scalar function in one compiled loop;
* :mod:`~kan_jax.training.sharding`: meshes, shardings and placement over devices and hosts;
* :mod:`~kan_jax.training.checkpoint`: parameter and training-state files.

Example:
    >>> from kan_jax.training import sharding as sh
    >>> from kan_jax.training import init_train_state, make_epoch_fn
"""

from kan_jax.training import checkpoint, loops, sharding
from kan_jax.training.checkpoint import CheckpointError, load_checkpoint, load_params, save_checkpoint, save_params
from kan_jax.training.epoch import TrainState, evaluate, init_train_state, make_epoch_fn, num_batches, train_epoch

__all__ = [
    "CheckpointError",
    "TrainState",
    "checkpoint",
    "evaluate",
    "init_train_state",
    "load_checkpoint",
    "load_params",
    "loops",
    "make_epoch_fn",
    "num_batches",
    "save_checkpoint",
    "save_params",
    "sharding",
    "train_epoch",
]
