"""``python -m experiments.pde`` (XLA:CPU's YNN fusions off unless ``XLA_FLAGS`` sets them)."""
from experiments._env import without_ynn_fusions

without_ynn_fusions()

from experiments.pde.cli import main  # noqa: E402

raise SystemExit(main())
