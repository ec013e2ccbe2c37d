"""Flax NNX KAN layers: :class:`KANLinear`, :class:`KAN` and the :class:`Grid` variable.

The public path of :mod:`kan_jax.layer.nnx` (see there).
"""
from kan_jax.layer.nnx import KAN, Grid, KANLinear

__all__ = ["Grid", "KANLinear", "KAN"]
