"""``python -m experiments.pde``."""
from experiments.pde.cli import main

raise SystemExit(main())
