r"""Physics-informed KANs on four forward problems: ``python -m experiments.pde``.

The adaptive protocol of Rigas et al. (a [2, 8, 8, 1] B-spline KAN, 4,096 Sobol collocation
points and 64 on each initial/boundary segment, residual-based attention weights,
residual-based resampling, grid extension 3 → 8 → 14 with the Adam state carried across)
with fewer Adam steps, followed by an L-BFGS end game in float64; or a tanh MLP of about the
KAN's parameter count at grid 3 on the same schedule. Modules:

* :mod:`~experiments.pde.problems`: diffusion, Helmholtz, Burgers, Allen–Cahn (residuals,
  boundary segments, reference solutions);
* :mod:`~experiments.pde.training`: the networks, the weighted loss, the Adam step, the
  redraw of collocation points, evaluation and the Hessian spectrum;
* :mod:`~experiments.pde.study`: the phases of a run, checkpoints and resumption, the record;
* :mod:`~experiments.pde.cli`: the configuration and presets, the figure, the entry point.

Outputs in ``--out-dir`` (default ``runs/pde/<problem>-<model>``), written atomically:
``result.json`` (``problem``, ``rel_l2`` as a fraction on the reference grid, ``iterations``,
``wall_s``, ``loss_history``, ``phases``, ``spectrum`` before and after the end game) and
``pde.png`` (reference, prediction, absolute error, loss curve).

Usage::

    python -m experiments.pde --problem burgers                      # full preset
    python -m experiments.pde --problem helmholtz --preset quick     # a smoke run
    python -m experiments.pde --problem allen_cahn --model mlp

References:
    S. Rigas et al., "Adaptive training of grid-dependent physics-informed Kolmogorov-Arnold
    networks", IEEE Access 12 (2024).
"""
from experiments.pde.cli import published_markdown

__all__ = ["published_markdown"]
