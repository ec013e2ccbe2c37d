"""Optimisers as optax gradient transformations.

* :mod:`kan_jax.optim.dgclip`: δ-GClip and GClip (:func:`dgclip`, :func:`gclip`,
  :func:`scale_by_dgclip`).
* :mod:`kan_jax.optim.hsodm`: HSODM, the homogeneous second-order descent method
  (:func:`hsodm`, :func:`scale_by_hsodm`).

The functions share their modules' names: ``kan_jax.optim.hsodm`` is the optimiser; the modules
themselves are ``importlib.import_module("kan_jax.optim.hsodm")``.
"""
from kan_jax.optim.dgclip import ScaleByDGClipState, dgclip, gclip, scale_by_dgclip
from kan_jax.optim.hsodm import ScaleByHSODMState, hsodm, scale_by_hsodm

__all__ = [
    "ScaleByDGClipState",
    "ScaleByHSODMState",
    "dgclip",
    "gclip",
    "hsodm",
    "scale_by_dgclip",
    "scale_by_hsodm",
]
