"""Conversion between this library's KAN variables and PyTorch efficient-kan's ``state_dict``.

efficient-kan stores ``spline_weight`` as ``(out, in, n)`` and ``spline_scaler`` as
``(out, in)``; this library stores them in the order of the spline product, ``(in, n, out)``
and ``(in, out)`` (:mod:`kan_jax.layer.bspline`). ``base_weight`` ``(out, in)`` and the grid
``(in, M)`` have the same layout in both.

References:
  Blealtan, *efficient-kan* (PyTorch implementation of the same layer).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

__all__ = ["from_efficient_kan", "to_efficient_kan"]

Dtype = Any


_EK_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(base_weight|spline_weight|spline_scaler|grid)$")


def from_efficient_kan(state_dict: Mapping[str, Any], dtype: Dtype = jnp.float32) -> dict[str, Any]:
    """Linen variables of :class:`kan_jax.KAN` from a PyTorch efficient-kan ``KAN.state_dict()``.

    Args:
      state_dict: Mapping of names such as ``layers.0.base_weight``, ``layers.0.spline_weight``,
        ``layers.0.spline_scaler``, ``layers.0.grid`` (an optional prefix such as ``module.``
        is allowed) to NumPy arrays or tensors.
      dtype: Dtype of the returned arrays.

    Returns:
      ``{"params": {"layers_i": {...}}, "grid": {"layers_i": {"grid": ...}}}``, on which
      ``KAN(...).apply`` computes efficient-kan's outputs (same formula, scaler included).

    Raises:
      ValueError: If no layer is found, layers are missing tensors or their shapes disagree.
    """
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, value in state_dict.items():
        match = _EK_KEY.search(name)
        if match is None:
            continue
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = np.asarray(value)
    if not layers:
        raise ValueError("no efficient-kan layer found: expected keys like 'layers.0.base_weight'")
    if sorted(layers) != list(range(len(layers))):
        raise ValueError(f"efficient-kan layers must be numbered 0..L-1, got {sorted(layers)}")
    params, grids = {}, {}
    prev_out = None
    for i in range(len(layers)):
        layer = layers[i]
        missing = {"base_weight", "spline_weight", "grid"} - set(layer)
        if missing:
            raise ValueError(f"efficient-kan layer {i} lacks {sorted(missing)}")
        out_f, in_f = layer["base_weight"].shape
        if layer["spline_weight"].ndim != 3 or layer["spline_weight"].shape[:2] != (out_f, in_f):
            raise ValueError(
                f"layers.{i}.spline_weight: expected shape ({out_f}, {in_f}, n), got {layer['spline_weight'].shape}"
            )
        if layer["grid"].ndim != 2 or layer["grid"].shape[0] != in_f:
            raise ValueError(f"layers.{i}.grid: expected shape ({in_f}, M), got {layer['grid'].shape}")
        if "spline_scaler" in layer and layer["spline_scaler"].shape != (out_f, in_f):
            raise ValueError(
                f"layers.{i}.spline_scaler: expected shape ({out_f}, {in_f}), got {layer['spline_scaler'].shape}"
            )
        if prev_out is not None and prev_out != in_f:
            raise ValueError(f"layer {i} takes {in_f} inputs but layer {i - 1} gives {prev_out} outputs")
        prev_out = out_f
        name = f"layers_{i}"
        params[name] = {
            key: jnp.asarray(layer[key], dtype) for key in ("base_weight", "spline_weight", "spline_scaler") if key in layer
        }
        params[name]["spline_weight"] = jnp.transpose(params[name]["spline_weight"], (1, 2, 0))  # (in, n, out)
        if "spline_scaler" in params[name]:
            params[name]["spline_scaler"] = params[name]["spline_scaler"].T  # (in, out)
        grids[name] = {"grid": jnp.asarray(layer["grid"], dtype)}
    return {"params": params, "grid": grids}


def to_efficient_kan(variables: Variables) -> dict[str, np.ndarray]:
    """An efficient-kan ``state_dict`` (NumPy arrays) from :class:`kan_jax.KAN` variables.

    Load it in PyTorch with
    ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.

    Args:
      variables: ``{"params": ..., "grid": ...}`` of a :class:`kan_jax.KAN`.

    Returns:
      The ``state_dict``, spline tensors in efficient-kan's layouts.

    Raises:
      ValueError: If a layer is not a B-spline layer (``basis`` other than ``"bspline"``).
    """
    params, grids = variables["params"], variables["grid"]
    state: dict[str, np.ndarray] = {}
    for name in sorted(params, key=lambda n: int(n.split("_")[-1])):
        i = int(name.split("_")[-1])
        n_bases, n_knots = np.shape(params[name]["spline_weight"])[1], np.shape(grids[name]["grid"])[-1]
        if n_knots <= n_bases:
            raise ValueError(
                f"{name}: efficient-kan holds B-spline layers (a grid of more knots than bases), got spline_weight "
                f"with {n_bases} bases and a grid of {n_knots} columns: a layer of another basis family"
            )
        for key, value in params[name].items():
            value = np.asarray(value)
            if key == "spline_weight":
                value = value.transpose(2, 0, 1)
            elif key == "spline_scaler":
                value = value.T
            state[f"layers.{i}.{key}"] = np.ascontiguousarray(value)
        state[f"layers.{i}.grid"] = np.asarray(grids[name]["grid"])
    return state
