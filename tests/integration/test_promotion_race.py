"""Two promotions racing for one model: exactly one wins, the alias history stays consistent.

The overlap is forced, not hoped for: the registry's test hook (``MLOPS_PACK_TEST_HOOK_DIR``,
off in production) makes each process mark when it reaches the lock and hold inside the
critical section until the test releases it. With the lock, the second process cannot get
in while the first holds it; without it, both are inside at once and both promote.
"""

from __future__ import annotations

import itertools
import json
import os
import time

from mlops_pack.errors import EXIT_CHAMPION_MOVED, EXIT_OK
from mlops_pack.registry import CHAMPION, PREVIOUS
from support import (
    ROOT,
    challenger_decision,
    churn_spec_copy,
    lenient,
    promote_process,
    run_cli,
)


def test_two_promotions_race_and_exactly_one_wins(store, registry, tmp_path):
    # Lenient enough that both challengers pass the gate against v1: the race is the subject.
    spec = churn_spec_copy(tmp_path, lenient)
    assert run_cli("retrain", "--spec", spec, "--out", tmp_path / "r1")[0] == EXIT_OK
    decisions = [
        challenger_decision(spec, "churn/churn_month_02.csv", tmp_path, "a"),
        challenger_decision(spec, "churn/churn_month_01.csv", tmp_path, "b"),
    ]
    # Both decisions were made against champion v1; promote them at the same time from
    # two processes, as two Airflow workers would.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    env = {**os.environ, "MLOPS_PACK_TEST_HOOK_DIR": str(hooks)}
    procs = [
        promote_process(spec, decision, tmp_path / f"p{i}", env, ROOT)
        for i, decision in enumerate(decisions)
    ]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (
        len(list(hooks.glob("lock_wait.*"))) == 2 and list(hooks.glob("inside.*"))
    ):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.1)
    assert len(list(hooks.glob("lock_wait.*"))) == 2, "both promotions should reach the lock"
    time.sleep(3)  # ample for the second to read the alias too, if nothing stopped it
    inside_together = sorted(p.name for p in hooks.glob("inside.*"))
    (hooks / "release").touch()
    codes = [p.wait(timeout=300) for p in procs]
    assert len(inside_together) == 1, (
        f"both promotions were in the critical section: {inside_together}"
    )
    assert sorted(codes) == [EXIT_OK, EXIT_CHAMPION_MOVED], [p.stderr.read() for p in procs]
    loser = codes.index(EXIT_CHAMPION_MOVED)
    loser_result = json.loads((tmp_path / f"p{loser}" / "result.json").read_text())
    assert loser_result["status"] == "champion_moved"
    assert "champion moved" in loser_result["error"]
    winner_version = json.loads((tmp_path / f"p{1 - loser}" / "result.json").read_text())["result"][
        "champion"
    ]
    assert registry.alias("churn", CHAMPION).version == winner_version
    assert registry.alias("churn", PREVIOUS).version == "1"
    promotions = registry.history("churn", "promotion")
    assert [(e.get("from_version"), e["to_version"]) for e in promotions] == [
        (None, "1"),
        ("1", winner_version),
    ]
    # Every promotion starts where the previous one ended.
    for before, after in itertools.pairwise(promotions):
        assert after["from_version"] == before["to_version"]
