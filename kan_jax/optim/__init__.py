"""Optimisers as optax gradient transformations.

* :mod:`kan_jax.optim.dgclip`: δ-GClip and GClip (:func:`dgclip`, :func:`gclip`,
  :func:`scale_by_dgclip`).
* :mod:`kan_jax.optim.hsodm`: HSODM, the homogeneous second-order descent method
  (:func:`hsodm`, :func:`scale_by_hsodm`).
* :mod:`kan_jax.optim.bfgs`: dense BFGS with a line search, for small networks (:func:`bfgs`,
  :func:`scale_by_bfgs`).
* :mod:`kan_jax.optim.sfn`: SFN, HSODM's direction from a minibatch gradient and a sub-sampled
  Hessian with a fixed or scheduled step (:func:`sfn`, :func:`scale_by_sfn`).

The functions share their modules' names: ``kan_jax.optim.hsodm`` is the optimiser; the modules
themselves are ``importlib.import_module("kan_jax.optim.hsodm")``.
"""
from kan_jax.optim.bfgs import ScaleByBFGSState, bfgs, scale_by_bfgs
from kan_jax.optim.dgclip import ScaleByDGClipState, dgclip, gclip, scale_by_dgclip
from kan_jax.optim.hsodm import ScaleByHSODMState, hsodm, scale_by_hsodm
from kan_jax.optim.sfn import ScaleBySFNState, scale_by_sfn, sfn

__all__ = [
    "ScaleByBFGSState",
    "ScaleByDGClipState",
    "ScaleByHSODMState",
    "ScaleBySFNState",
    "bfgs",
    "dgclip",
    "gclip",
    "hsodm",
    "scale_by_bfgs",
    "scale_by_dgclip",
    "scale_by_hsodm",
    "scale_by_sfn",
    "sfn",
]
