r"""The models, data and losses the studies share.

* the toy regression of pykan's first tutorial: ``f(x, y) = exp(sin(pi x) + y^2)`` on
  ``[-1, 1]^2`` (:func:`target_function`, :func:`toy_dataset`) fitted by a KAN ``[2, H, 1]``
  (:func:`regression_kan`) with the squared loss on a fixed knot grid (:func:`squared_loss`);
* the ReLU MLP ``[784, H, 10]`` of the seed notebook (:class:`MLP`) with the mean
  cross-entropy (:func:`cross_entropy_loss`) on MNIST images (:func:`mnist_arrays`).

Every loss is ``loss(params, (x, y)) -> scalar``, the signature of
:mod:`kan_jax.curvature` and :mod:`kan_jax.training.loops`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from experiments.models import regression_kan, squared_loss, toy_dataset
    >>> model = regression_kan(5, dtype=jnp.float32)
    >>> data = toy_dataset(100, seed=0, dtype=jnp.float32)
    >>> batch = (data["train_input"], data["train_label"])
    >>> variables = model.init(jax.random.key(0), batch[0][:1])
    >>> loss = squared_loss(model, variables["grid"])
    >>> bool(loss(variables["params"], batch) > 0)
    True

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", ICLR 2025 (the toy regression).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from kan_jax import KAN
from kan_jax.data import create_dataset, preprocess_mnist

__all__ = [
    "MLP",
    "target_function",
    "toy_dataset",
    "regression_kan",
    "squared_loss",
    "cross_entropy_loss",
    "mnist_arrays",
]

Loss = Callable[[Any, tuple[jax.Array, jax.Array]], jax.Array]


def target_function(x: np.ndarray) -> np.ndarray:
    """``f(x, y) = exp(sin(pi x) + y^2)`` on inputs of shape ``(N, 2)``; returns ``(N, 1)``."""
    return np.exp(np.sin(np.pi * x[:, [0]]) + x[:, [1]] ** 2)


def toy_dataset(train_num: int, seed: int, dtype: Any, test_num: Optional[int] = None) -> dict[str, jax.Array]:
    """``create_dataset(target_function, n_var=2)``: uniform inputs on ``[-1, 1]^2``.

    Args:
        train_num: training points.
        seed: the seed of the draw.
        dtype: the arrays' dtype.
        test_num: test points (default ``train_num``; the training split does not depend on it).

    Returns:
        ``train_input``, ``train_label``, ``test_input``, ``test_label`` as arrays of ``dtype``.
    """
    test_num = train_num if test_num is None else test_num
    ds = create_dataset(target_function, n_var=2, train_num=train_num, test_num=test_num, seed=seed)
    return {k: jnp.asarray(v, dtype) for k, v in ds.items()}


def regression_kan(hidden: int, grid_size: int = 5, spline_order: int = 3, dtype: Any = jnp.float64) -> KAN:
    """The KAN ``[2, hidden, 1]`` of the toy regression (efficient-kan layout)."""
    return KAN((2, hidden, 1), grid_size=grid_size, spline_order=spline_order, param_dtype=jnp.dtype(dtype))


def squared_loss(model: nn.Module, grid: Any) -> Loss:
    """``loss(params, (x, y)) = mean((model(x) - y)^2)`` with the knot grid fixed."""

    def loss(params, batch):
        x, y = batch
        return jnp.mean((model.apply({"params": params, "grid": grid}, x) - y) ** 2)

    return loss


class MLP(nn.Module):
    """``[in, hidden, 10]`` with ReLU.

    Attributes:
        hidden: the hidden width.
        names: the names of the hidden and the output layer (the parameter keys; Flax derives
            each layer's initialisation from its name).
    """

    hidden: int = 512
    names: tuple[str, str] = ("Dense_0", "Dense_1")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden, name=self.names[0])(x))
        return nn.Dense(10, name=self.names[1])(x)


def cross_entropy_loss(model: nn.Module) -> Loss:
    """``loss(params, (x, y))``: the mean softmax cross-entropy of integer labels."""

    def loss(params, batch):
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, x), y).mean()

    return loss


def mnist_arrays(images: np.ndarray, labels: np.ndarray, n: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
    """The first ``n`` (default all) images preprocessed and flattened, and their int32 labels."""
    if n is not None:
        images, labels = images[:n], labels[:n]
    return jnp.asarray(preprocess_mnist(images)), jnp.asarray(np.asarray(labels, np.int32))
