r"""The four forward problems of the adaptive physics-informed KAN benchmark.

Each :class:`Problem` names its two coordinates, its box, the partial derivatives its residual
needs, the residual itself (from a dict of derivatives in the problem's coordinates: ``"u"``,
``"t"`` for ``∂u/∂t``, ``"xx"`` for ``∂²u/∂x²`` ...), its initial and boundary segments with
their target values, and its reference solution on a grid (closed form, or read from
``--data-dir``):

* ``diffusion``: ``u_t = u_xx + e^{−t}(π² − 1) sin(πx)``, ``(t, x) ∈ [0, 1]²``, exact
  ``e^{−t} sin(πx)`` (reference grid 101 × 101);
* ``helmholtz``: ``u_xx + u_yy + u = q``, ``(x, y) ∈ [−1, 1]²``, exact ``sin(πx) sin(4πy)``
  (reference grid 201 × 201);
* ``burgers``: ``u_t + u u_x − (0.01/π) u_xx = 0``, ``t ∈ [0, 1]``, ``x ∈ [−1, 1]``
  (``burgers.npz``);
* ``allen_cahn``: ``u_t − 0.001 u_xx − 5 (u − u³) = 0``, ``t ∈ [0, 1]``, ``x ∈ [−1, 1]``
  (``allen_cahn.mat``).

References:
  S. Rigas et al., "Adaptive training of grid-dependent physics-informed Kolmogorov-Arnold
  networks", IEEE Access 12 (2024).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax._optional import require

__all__ = ["Problem", "PROBLEMS", "Reference", "Segment", "reference_solution"]

Derivatives = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Segment:
    """Part of the boundary: coordinate ``axis`` fixed at ``value``, the other one free.

    Attributes:
      axis: The fixed coordinate (0 or 1).
      value: Its value.
      target: ``target(points) -> (N,)``, the prescribed ``u`` on the segment.
    """

    axis: int
    value: float
    target: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference solution on a tensor grid: ``values[i, j] = u(a[i], b[j])``.

    Attributes:
      a: Values of coordinate 0, ``(n_a,)``.
      b: Values of coordinate 1, ``(n_b,)``.
      values: ``(n_a, n_b)``.
    """

    a: np.ndarray
    b: np.ndarray
    values: np.ndarray

    @property
    def points(self) -> np.ndarray:
        """The grid's points, ``(n_a n_b, 2)``, the second coordinate varying fastest."""
        return np.stack(np.meshgrid(self.a, self.b, indexing="ij"), -1).reshape(-1, 2)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One forward problem.

    Attributes:
      name: The ``--problem`` name.
      coords: The two coordinates' names (``("t", "x")`` or ``("x", "y")``).
      bounds: ``((lo, hi), (lo, hi))`` of the box.
      first: Coordinates whose first partials the residual reads.
      second: Coordinates whose second partials it reads.
      residual: ``residual(d, points) -> (N,)`` from the derivatives ``d`` at ``points``.
      segments: The initial and boundary segments.
      reference: ``reference(data_dir) -> Reference``.
    """

    name: str
    coords: tuple[str, str]
    bounds: tuple[tuple[float, float], tuple[float, float]]
    first: tuple[int, ...]
    second: tuple[int, ...]
    residual: Callable[[Derivatives, jax.Array], jax.Array]
    segments: tuple[Segment, ...]
    reference: Callable[[Path], Reference]


def _exact(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], bounds, n: int) -> Callable[[Path], Reference]:
    def reference(data_dir: Path) -> Reference:
        a, b = (np.linspace(lo, hi, n) for lo, hi in bounds)
        return Reference(a, b, fn(*np.meshgrid(a, b, indexing="ij")))
    return reference


def _data_file(data_dir: Path, name: str) -> Path:
    path = Path(data_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"reference file {name} not found in --data-dir {data_dir} (expected {path})")
    return path


def _burgers_reference(data_dir: Path) -> Reference:
    data = np.load(_data_file(data_dir, "burgers.npz"))
    return Reference(data["t"].reshape(-1), data["x"].reshape(-1), np.asarray(data["usol"]).T)


def _allen_cahn_reference(data_dir: Path) -> Reference:
    io = require("scipy.io", "pde")
    data = io.loadmat(_data_file(data_dir, "allen_cahn.mat"))
    return Reference(data["t"].reshape(-1), data["x"].reshape(-1), np.asarray(data["u"]))


PI = np.pi
NU = 0.01 / PI


def _diffusion(d: Derivatives, p: jax.Array) -> jax.Array:
    t, x = p[:, 0], p[:, 1]
    return d["t"] - d["xx"] - jnp.exp(-t) * (PI ** 2 - 1) * jnp.sin(PI * x)


def _helmholtz(d: Derivatives, p: jax.Array) -> jax.Array:
    x, y = p[:, 0], p[:, 1]
    q = (1.0 - PI ** 2 - (4 * PI) ** 2) * jnp.sin(PI * x) * jnp.sin(4 * PI * y)
    return d["xx"] + d["yy"] + d["u"] - q


def _burgers(d: Derivatives, p: jax.Array) -> jax.Array:
    return d["t"] + d["u"] * d["x"] - NU * d["xx"]


def _allen_cahn(d: Derivatives, p: jax.Array) -> jax.Array:
    u = d["u"]
    return d["t"] - 0.001 * d["xx"] - 5.0 * (u - u ** 3)


def _zero(p: np.ndarray) -> np.ndarray:
    return np.zeros(p.shape[0])


PROBLEMS: dict[str, Problem] = {
    "diffusion": Problem(
        "diffusion", ("t", "x"), ((0.0, 1.0), (0.0, 1.0)), (0,), (1,), _diffusion,
        (Segment(0, 0.0, lambda p: np.sin(PI * p[:, 1])), Segment(1, 0.0, _zero), Segment(1, 1.0, _zero)),
        _exact(lambda t, x: np.exp(-t) * np.sin(PI * x), ((0.0, 1.0), (0.0, 1.0)), 101)),
    "helmholtz": Problem(
        "helmholtz", ("x", "y"), ((-1.0, 1.0), (-1.0, 1.0)), (), (0, 1), _helmholtz,
        tuple(Segment(axis, v, _zero) for axis in (0, 1) for v in (-1.0, 1.0)),
        _exact(lambda x, y: np.sin(PI * x) * np.sin(4 * PI * y), ((-1.0, 1.0), (-1.0, 1.0)), 201)),
    "burgers": Problem(
        "burgers", ("t", "x"), ((0.0, 1.0), (-1.0, 1.0)), (0, 1), (1,), _burgers,
        (Segment(0, 0.0, lambda p: -np.sin(PI * p[:, 1])), Segment(1, -1.0, _zero), Segment(1, 1.0, _zero)),
        _burgers_reference),
    "allen_cahn": Problem(
        "allen_cahn", ("t", "x"), ((0.0, 1.0), (-1.0, 1.0)), (0,), (1,), _allen_cahn,
        (Segment(0, 0.0, lambda p: p[:, 1] ** 2 * np.cos(PI * p[:, 1])),
         Segment(1, -1.0, lambda p: -np.ones(p.shape[0])), Segment(1, 1.0, lambda p: -np.ones(p.shape[0]))),
        _allen_cahn_reference),
}


def reference_solution(problem: Problem, data_dir: Path) -> Reference:
    """The reference of ``problem`` (from ``data_dir`` where it is a file), checked for shape.

    Raises:
      FileNotFoundError: The reference file is missing (the message names it).
      ValueError: Its arrays do not form a grid.
    """
    ref = problem.reference(Path(data_dir))
    if ref.values.shape != (ref.a.size, ref.b.size) or not np.all(np.isfinite(ref.values)):
        raise ValueError(f"{problem.name} reference: values {ref.values.shape} do not match the grid "
                         f"({ref.a.size}, {ref.b.size}) or are not finite")
    return ref
