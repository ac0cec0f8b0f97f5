"""A real model server container for churn, with v1 served and v2 evaluated (not deployed).

Models are trained in-process (fast, same code as the step containers); the server runs
in the hardened task image on a free port of 127.0.0.1.
"""

from __future__ import annotations

import pytest
from serving_support import churn_served


@pytest.fixture(scope="module")
def served(task_image, data_dir):
    with churn_served(task_image, data_dir) as state:
        yield state
