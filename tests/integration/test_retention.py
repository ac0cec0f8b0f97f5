"""Raw-data retention through the CLI: stored once by sha256, pruned by policy, never
from under a live version."""

from __future__ import annotations

from mlops_pack.hashing import sha256_file
from support import churn_spec_copy, lenient, run_cli


def test_batches_are_kept_once_and_pruned_only_outside_policy_and_live_versions(
    store, data_dir, tmp_path, registry
):
    def edit(raw):
        lenient(raw)
        raw["retention"] = {"batches": 1}

    spec = churn_spec_copy(tmp_path, edit)
    # v1 promoted (month 1), v2 rejected (35% label noise), v3 promoted (month 2).
    batches = ["churn/churn_month_01.csv", "churn/churn_noisy.csv", "churn/churn_month_02.csv"]
    for i, (batch, expected) in enumerate(zip(batches, (0, 3, 0), strict=True)):
        code, result = run_cli(
            "retrain", "--spec", spec, "--data", batch, "--out", tmp_path / f"run{i}",
        )  # fmt: skip
        assert code == expected, result
    # The same batch again is not stored twice (v4, the newest version).
    code, result = run_cli(
        "train", "--spec", spec, "--data", batches[2], "--out", tmp_path / "again"
    )
    assert code == 0, result
    assert result["result"]["retention"]["stored"] is False
    assert result["result"]["retention"]["bytes_written"] == 0

    first, noisy, second = (sha256_file(data_dir / b) for b in batches)
    assert run_cli("data", "list", "--spec", spec)[0] == 0
    # champion v3 and newest v4 (month 2), previous v1 (month 1): the rejected v2's batch
    # is the only one outside "the newest batch" with no live version.
    from mlops_pack.spec import load_spec
    from mlops_pack.steps import retention

    decisions = {
        b.sha256: (keep, why) for b, keep, why in retention.plan(registry, load_spec(spec))
    }
    assert set(decisions) == {first, noisy, second}
    assert decisions[noisy] == (False, "outside the retention policy, no live version")
    assert decisions[first] == (True, "behind live v1 (alias previous)")
    assert decisions[second][0] and "v3 (alias champion)" in decisions[second][1]

    dry = retention.prune(registry, load_spec(spec), apply=False)
    assert dry["pruned"] == [noisy] and not dry["applied"]
    assert retention.find(registry, "churn", noisy).pruned_at is None  # a dry run changes nothing

    assert run_cli("data", "prune", "--spec", spec, "--apply")[0] == 0
    assert retention.find(registry, "churn", noisy).pruned_at is not None
    for kept in (first, second):
        copy = retention.fetch(registry, "churn", kept, tmp_path / f"fetch-{kept[:6]}")
        assert sha256_file(copy) == kept
    try:
        retention.fetch(registry, "churn", noisy, tmp_path / "gone")
    except retention.DataMissingError as exc:
        assert "was pruned" in str(exc) and noisy[:12] in str(exc)
    else:
        raise AssertionError("a pruned batch was fetched")
    events = [e for e in registry.history("churn") if e["kind"] == "data_pruned"]
    assert len(events) == 1 and events[0]["batches"] == noisy[:12]
