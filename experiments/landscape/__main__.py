"""``python -m experiments.landscape``."""
from experiments.landscape.study import main

raise SystemExit(main())
