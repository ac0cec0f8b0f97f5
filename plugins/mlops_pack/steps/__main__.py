"""``python -m mlops_pack.steps <step> ...``: the entry point step containers run."""

from mlops_pack.cli import main

raise SystemExit(main())
