"""``python -m mlops_pack <command> ...``: the CLI, as step containers run it.

This entry sits above every code world (it is the CLI's), so no step module imports
upward. The step has written ``result.json`` and ended its MLflow runs by the time
``main`` returns, so the process exits at once instead of running interpreter shutdown:
tearing down the imported GX, MLflow and scikit-learn modules took 0.7 to 1.2 s per step
container (``docs/benchmarks.md``, orchestration) and protects nothing that is not
already on disk.
"""

import os
import sys

from mlops_pack.cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
