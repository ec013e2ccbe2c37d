r"""The "Is a KAN convex?" loss-landscape study: interpolation, Hessian spectra, an MLP.

Part 1, a KAN on a toy regression (pykan's tutorial set-up):

* data: ``create_dataset(f, n_var=2)`` with ``f(x, y) = exp(sin(pi x) + y^2)``, inputs uniform on
  ``[-1, 1]^2`` (1,000 training and 1,000 test points, seed ``--seed``);
* model: ``KAN([2, 5, 1])``, ``G = 5``, ``k = 3`` (efficient-kan layout, 150 parameters), in
  float64 by default (``--kan-dtype``); the knot grid is the initial uniform grid on
  ``[-1, 1]`` and is never updated, so ``theta0`` and ``thetaN`` describe functions on the
  same grid and the straight line between them is meaningful;
* training: full-batch L-BFGS (``optax.lbfgs``, memory 10, zoom line search) for
  ``--lbfgs-steps`` iterations in one compiled loop (:func:`kan_jax.training.loops.lbfgs`) on
  the objective ``MSE + lamb * R``, with ``R`` efficient-kan's sparsity regulariser
  (:func:`kan_jax.regularization_loss`, L1 + entropy of the spline weights). The default
  ``--lamb 1e-3`` keeps the seed study's regularised training while leaving the fit to the
  data term; ``--lamb 0`` trains on the squared
  loss alone, so that ``thetaN`` is a stationary point of the analysed loss. The default 400
  iterations are about what pykan's ``fit(opt="LBFGS", steps=20)`` does (each of its steps
  runs up to 20 L-BFGS iterations);
* analysis: every Hessian, interpolation and density is of the **squared loss** (the data
  term, as PyHessian's ``criterion`` in the seed study), not of the regularised objective;
* ``loss((1 - a) theta0 + a thetaN)`` for ``--num-alphas`` values of ``a`` on
  ``[--alpha-min, --alpha-max]`` (50 on [-1.5, 2]) on ``--num-datasets`` freshly seeded
  datasets (seeds ``seed + 1 ...``, their training splits) → ``interpolation.png``;
* the SLQ spectral density of the training-set Hessian at every ``a`` → ``densities.pdf``
  (one page per ``a``), with the exact spectrum's extremes, trace and fraction of negative
  eigenvalues at each ``a`` in the JSON;
* at ``thetaN``: the top-5 eigenvalues (Lanczos), the minimum eigenvalue (Lanczos), the trace
  (Hutchinson) next to the exact values from ``jax.hessian`` + ``eigh`` (computed in
  float64), with relative errors and residual norms → ``kan_spectrum.json``, and the density
  at ``thetaN`` with the exact spectrum smoothed by the same kernel → ``kan_density.png``.

Part 2, a ReLU MLP ``[784, 512, 10]`` on MNIST (float32): ``--mlp-steps`` Adam steps on
cross-entropy (minibatches of ``--mlp-train-batch`` from a seeded shuffle of the 60,000
training images), then on the first ``--mlp-batch`` training images: the top eigenvalue
(Lanczos), the Hutchinson trace, the SLQ density (``mlp_density.png``) and the minimum
eigenpair of the augmented matrix ``[[H, g], [g^T, -delta]]``, with residual norms and
timings → ``mlp_spectrum.json``.

All analyses run under ``jax.default_matmul_precision("highest")``; float64 is enabled in the
process (the MLP stays float32). Timings are wall-clock seconds of each phase *including* jit
compilation (one call each).

Outputs in ``--out-dir`` (default ``runs/landscape``), each written atomically (a temporary
file in the same folder, then a rename): ``theta0.msgpack`` and ``thetaN.msgpack``
(:func:`kan_jax.training.checkpoint.save_params`; rebuild the grid with ``KAN(...).init``),
``interpolation.png``, ``densities.pdf``, ``kan_density.png``, ``kan_spectrum.json``,
``mlp_spectrum.json``, ``mlp_density.png`` and ``summary.md`` (the printed summary).

The modules: :mod:`~experiments.landscape.kan` (part 1), :mod:`~experiments.landscape.mlp`
(part 2), :mod:`~experiments.landscape.study` (configuration, command line, summary);
:func:`~experiments.landscape.study.published_markdown` gives the tables the documentation
includes (``python -m experiments.publish``).

Usage::

    python -m experiments.landscape --data-dir ../shared/data/mnist           # the full study
    python -m experiments.landscape --quick --data-dir ../shared/data/mnist   # a smoke run
    python -m experiments.landscape --skip-mlp --lamb 0                        # KAN part only
"""
from experiments.landscape.common import DENSITY_FIGSIZE, DPI, INTERPOLATION_FIGSIZE, TOP_K
from experiments.landscape.kan import KANConfig, run_kan_part
from experiments.landscape.mlp import MLPConfig, run_mlp_part
from experiments.landscape.study import (
    PRESETS,
    LandscapeConfig,
    main,
    parse_args,
    published_markdown,
    results_markdown,
    run_study,
    summary_text,
)

__all__ = [
    "DENSITY_FIGSIZE",
    "DPI",
    "INTERPOLATION_FIGSIZE",
    "TOP_K",
    "KANConfig",
    "MLPConfig",
    "LandscapeConfig",
    "PRESETS",
    "main",
    "parse_args",
    "published_markdown",
    "results_markdown",
    "run_kan_part",
    "run_mlp_part",
    "run_study",
    "summary_text",
]
