"""The model server in its hardened container, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import shutil
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
from mlops_pack.server_client import ServerClient
from mlops_pack.serving.prediction_log import read_records
from serving_support import restart_server, sample_rows


def _public(served) -> ServerClient:
    return ServerClient(served["server"].url, served["server"].secret("prediction_key"))


def _admin(served) -> ServerClient:
    return ServerClient(served["server"].url, served["server"].secret("admin_token"))


def _bare(
    url: str, method: str = "GET", body: bytes | None = None, token: str | None = None
) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _predictions_dir(served):
    return served["home"] / "serving" / "churn" / "predictions"


def test_serves_v1_with_version_health_and_metrics(served):
    public = _public(served)
    rows, _ = sample_rows(served)
    status, body, headers = public.call(
        "POST", "/predict", {"rows": rows[:1]}, headers={"X-Request-Id": "single-1"}
    )
    assert status == 200, body
    assert body["version"] == "1" and body["slot"] == "stable"
    assert len(body["predictions"]) == 1 and body["labels"][0] in (0, 1)
    assert body["request_id"] == "single-1" == headers["x-request-id"]
    status, batch, _ = public.call("POST", "/predict", {"rows": rows[:100]})
    assert status == 200 and len(batch["predictions"]) == 100
    assert all(0.0 <= p <= 1.0 for p in batch["predictions"])

    assert public.ok("GET", "/health") == {"live": True, "ready": True, "model": "churn"}
    version = public.ok("GET", "/version")
    registry_sha = _admin(served).ok("GET", "/admin/stats")["slots"]["stable"]["sha256"]
    assert version["version"] == "1" and version["artifact_sha256"] == registry_sha
    assert version["image"] == served["image"]

    status, metrics, _ = public.call("GET", "/metrics")
    assert status == 200
    samples = _samples(metrics)
    ok = {"model": "churn", "version": "1", "status": "ok"}
    assert samples["mlops_pack_requests_total", _key({**ok, "slot": "stable"})] == 2
    assert (
        samples["mlops_pack_predictions_total", _key({**ok, "slot": "stable"}, drop="status")]
        == 101
    )
    assert samples["mlops_pack_request_seconds_count", _key(ok)] == 2
    info = [k for name, k in samples if name == "mlops_pack_model_info"]
    assert [dict(k)["version"] for k in info if dict(k)["slot"] == "stable"] == ["1"]


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """The exposition parsed by Prometheus' own parser: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, _key(s.labels)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _key(labels: dict[str, str], drop: str | None = None) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k != drop))


def test_malformed_requests_get_4xx_that_name_the_problem(served):
    public = _public(served)
    rows, _ = sample_rows(served)
    good = rows[0]
    cases = {
        "missing field": (
            {"rows": [{k: v for k, v in good.items() if k != "age"}]},
            422,
            "missing field 'age'",
        ),
        "wrong type": (
            {"rows": [{**good, "age": "forty"}]},
            422,
            "rows[0].age: expected a number, got str 'forty'",
        ),
        "extra field": ({"rows": [{**good, "shoe_size": 43}]}, 422, "unknown field 'shoe_size'"),
        "empty batch": ({"rows": []}, 400, '"rows" is empty'),
        "oversized batch": ({"rows": [good] * 1001}, 413, "at most 1000 per request"),
        "unknown category": (
            {"rows": [{**good, "plan": "platinum"}]},
            422,
            "rows[0].plan: 'platinum' is not an allowed category",
        ),
        "null where none allowed": (
            {"rows": [{**good, "age": None}]},
            422,
            "rows[0].age: null is not allowed",
        ),
        "not a list": ({"rows": good}, 400, '"rows" must be a list'),
        "wrong top-level key": ({"instances": [good]}, 400, 'exactly one key, "rows"'),
        "boolean as number": ({"rows": [{**good, "age": True}]}, 422, "expected a number"),
    }
    for label, (body, status, message) in cases.items():
        got, answer, _ = public.call("POST", "/predict", body)
        assert got == status, (label, answer)
        assert message in answer["error"], (label, answer["error"])
    got, answer, _ = public.call("POST", "/predict", raw=b"{not json")
    assert got == 400 and "not valid JSON" in answer["error"]
    got, answer, _ = public.call("POST", "/predict", raw=b"\xff\xfe")
    assert got == 400
    huge = json.dumps({"rows": [{**good, "age": 10**400}]}).encode()
    got, answer, _ = public.call("POST", "/predict", raw=huge)
    assert got == 422 and "rows[0].age: expected a finite number" in answer["error"]
    endless = b'{"rows": [{"age": ' + b"9" * 5000 + b"}]}"  # past Python's int-parse limit
    assert public.call("POST", "/predict", raw=endless)[0] == 400
    # A body announced as 5 MB is refused from its headers, before it is read.
    connection = http.client.HTTPConnection("127.0.0.1", served["server"].port, timeout=10)
    connection.putrequest("POST", "/predict")
    connection.putheader("Authorization", f"Bearer {served['server'].secret('prediction_key')}")
    connection.putheader("Content-Length", "5000000")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and b"exceeds" in response.read()
    connection.close()
    deep = b'{"rows": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert public.call("POST", "/predict", raw=deep)[0] == 400
    admin = _admin(served)
    got, answer, _ = admin.call("PUT", "/admin/traffic", {"mode": "canary", "share": "abc"})
    assert got == 422 and "share must be a number" in answer["error"]
    got, answer, _ = admin.call("POST", "/admin/score", {"slot": ["stable"], "rows": [good]})
    assert got == 422 and "slot must be" in answer["error"]
    # Allowed nulls pass (total_charges may be null), and the server still serves.
    got, answer, _ = public.call("POST", "/predict", {"rows": [{**good, "total_charges": None}]})
    assert got == 200, answer
    metrics = public.call("GET", "/metrics")[1]
    assert 'status="5' not in metrics and 'status="error"' not in metrics
    assert 'mlops_pack_refused_requests_total{model="churn",status="422"}' in metrics


def test_every_path_needs_its_secret_and_secrets_never_reach_logs(served):
    server = served["server"]
    key, admin = server.secret("prediction_key"), server.secret("admin_token")
    url = server.url
    row = json.dumps({"rows": sample_rows(served)[0][:1]}).encode()
    for path in ("/health", "/version", "/metrics"):
        assert _bare(url + path) == 401
        assert _bare(url + path, token="wrong") == 401
        assert _bare(url + path, token=key) == 200
    assert _bare(url + "/predict", "POST", row) == 401
    assert _bare(url + "/predict", "POST", row, token=admin) == 401  # the admin token is not a key
    assert _bare(url + "/predict", "POST", row, token=key) == 200
    for method, path in (
        ("GET", "/admin/stats"),
        ("DELETE", "/admin/candidate"),
        ("POST", "/admin/promote"),
        ("POST", "/admin/rollback"),
    ):
        assert _bare(url + path, method, b"{}") == 401
        assert _bare(url + path, method, b"{}", token=key) == 401  # a key is not admin
    assert _bare(url + "/admin/stats", token=admin) == 200

    logs = served["client"].logs(server.container).decode()
    files = "".join(p.read_text() for p in _predictions_dir(served).rglob("*.jsonl"))
    state = (served["home"] / "serving/churn/state/state.json").read_text()
    inspected = served["client"].inspect_container(server.container)
    # Requests are not batch work: the server keeps Docker's default weight, steps yield.
    assert inspected["HostConfig"]["CpuShares"] == 1024
    inspect = json.dumps(inspected)
    for secret in (key, admin):
        assert secret not in logs and secret not in files and secret not in state
        assert secret not in inspect  # not in the command line or the environment


def test_flags_out_of_range_inputs_and_batches(served):
    public = _public(served)
    rows, _ = sample_rows(served)
    scored = public.ok("POST", "/predict", {"rows": rows})  # 200 rows: inside the band
    assert "flags" not in scored
    positive = [r for r, label in zip(rows, scored["labels"], strict=True) if label == 1]
    assert positive, "the sample has no row the served model calls positive"
    risky = (positive * 25)[:25]  # a batch whose positive rate is 1.0, above the band's 0.6
    status, body, _ = public.call(
        "POST", "/predict", {"rows": risky}, headers={"X-Request-Id": "band-1"}
    )
    assert status == 200
    assert [f["kind"] for f in body["flags"]] == ["positive_rate"]
    status, body, _ = public.call(
        "POST",
        "/predict",
        {"rows": [{**rows[0], "tenure_months": 500}]},
        headers={"X-Request-Id": "range-1"},
    )
    assert status == 200 and body["flags"][0]["kind"] == "input_range"
    assert "tenure_months=500.0 outside [0.0, 120.0]" in body["flags"][0]["detail"][0]
    metrics = public.call("GET", "/metrics")[1]
    flagged = {
        dict(labels)["kind"]: value
        for (name, labels), value in _samples(metrics).items()
        if name == "mlops_pack_range_violations_total"
    }
    assert flagged.get("positive_rate") == 1 and flagged.get("input_range") == 1, flagged
    logged = {r["request_id"]: r for r in read_records(_predictions_dir(served))}
    assert logged["band-1"]["flags"][0]["kind"] == "positive_rate"
    assert logged["range-1"]["flags"][0]["kind"] == "input_range"
    logs = served["client"].logs(served["server"].container).decode()
    assert "request band-1 flagged" in logs and "request range-1 flagged" in logs


def test_shadow_scores_every_request_without_answering(served):
    admin, public = _admin(served), _public(served)
    v2_sha = json.loads((served["work"] / "v2-train" / "result.json").read_text())["result"][
        "artifact_sha256"
    ]
    from mlops_pack.registry import Registry
    from mlops_pack.steps.served import stage

    registry = Registry()
    stage(registry, registry.version("churn", "2"))
    admin.ok("POST", "/admin/candidate", {"version": "2", "sha256": v2_sha})
    admin.ok("PUT", "/admin/traffic", {"mode": "shadow", "share": 0})
    rows, _ = sample_rows(served)
    for index in range(10):
        body = public.ok("POST", "/predict", {"rows": rows[index : index + 1]})
        assert body["version"] == "1" and body["slot"] == "stable"
    # Shadow scoring runs after each answer is sent: give the last one a moment.
    deadline = time.monotonic() + 10
    while True:
        stats = admin.ok("GET", "/admin/stats")["versions"]
        if stats.get("2", {}).get("requests") == 10 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert stats["2"]["requests"] == 10 and stats["2"]["paired_rows"] == 10
    assert stats["1"]["requests"] == 10
    shadow = [r for r in read_records(_predictions_dir(served)) if r["slot"] == "shadow"]
    assert len(shadow) == 10 and {r["version"] for r in shadow} == {"2"}
    admin.ok("DELETE", "/admin/candidate")
    assert admin.ok("GET", "/admin/stats")["slots"]["candidate"] is None


def test_logs_survive_a_restart_and_retention_removes_only_expired_days(served):
    public = _public(served)
    rows, _ = sample_rows(served)
    ids = [f"restart-{i}" for i in range(25)]
    for request_id in ids:
        status, _, _ = public.call(
            "POST", "/predict", {"rows": rows[:1]}, headers={"X-Request-Id": request_id}
        )
        assert status == 200
    root = _predictions_dir(served)
    expired, kept = root / "date=2000-01-01", root / "date=2999-01-01"
    owner = root.stat()
    for folder in (expired, kept):  # as the server itself would have written them
        folder.mkdir()
        (folder / "part-old.jsonl").write_text('{"request_id": "old"}\n')
        for path in (folder, folder / "part-old.jsonl"):
            os.chown(path, owner.st_uid, owner.st_gid)
    (root / "NOTES.txt").write_text("not a partition")
    served["client"].kill(served["server"].container)  # no graceful shutdown
    restart_server(served)  # removes the killed container, starts a new one
    logged = {r["request_id"] for r in read_records(root)}
    assert set(ids) <= logged
    assert not expired.exists() and kept.exists() and (root / "NOTES.txt").exists()
    assert (root / f"date={datetime.now(UTC).date().isoformat()}").exists()
    # The restarted server serves the stable model it had: v1.
    assert _public(served).ok("GET", "/version")["version"] == "1"


def test_prediction_log_carries_inputs_and_keys_for_the_monitor(served):
    """Each logged request has its feature values, columnar and as sent (nulls stay null),
    and the spec's key when every row carried it, so later labels can be joined."""
    public = _public(served)
    rows, _ = sample_rows(served)
    first, second = dict(rows[0]), dict(rows[1])
    second["total_charges"] = None  # a null the spec allows
    keyed = [{**first, "customer_id": "C-1"}, {**second, "customer_id": "C-2"}]
    status, body, _ = public.call(
        "POST", "/predict", {"rows": keyed}, headers={"X-Request-Id": "keyed-1"}
    )
    assert status == 200, body
    status, body, _ = public.call(
        "POST", "/predict", {"rows": [first]}, headers={"X-Request-Id": "unkeyed-1"}
    )
    assert status == 200, body
    status, body, _ = public.call("POST", "/predict", {"rows": [{**first, "customer_id": 1.5}]})
    assert status == 422 and "the key ['customer_id'] must be given whole" in body["error"]
    logged = {r["request_id"]: r for r in read_records(_predictions_dir(served))}
    record = logged["keyed-1"]
    from mlops_pack.spec import load_spec

    spec = load_spec(served["include"] / "models" / "churn.yaml")
    assert list(record["inputs"]) == [c.name for c in spec.features()]  # the spec's order
    assert record["inputs"]["total_charges"] == [first["total_charges"], None]
    assert record["inputs"]["contract"] == [first["contract"], second["contract"]]
    assert record["keys"] == {"customer_id": ["C-1", "C-2"]}
    assert record["rows"] == 2 and len(record["predictions"]) == 2
    assert "keys" not in logged["unkeyed-1"]
    assert logged["unkeyed-1"]["inputs"]["age"] == [first["age"]]


def test_a_window_of_logs_downloads_with_the_admin_token_whole_lines_only(served, tmp_path):
    """What a worker on another host gets: the window's days of the server's prediction
    logs over HTTP, byte for byte as on the server's volume up to the last whole line (a
    line still being written is not sent), and only with the admin token."""
    from datetime import timedelta

    from mlops_pack.errors import ServerRefusedError
    from mlops_pack.served_logs import download_window

    public = _public(served)
    rows, _ = sample_rows(served)
    for i in range(5):
        status, _, _ = public.call(
            "POST", "/predict", {"rows": rows[:2]}, headers={"X-Request-Id": f"fetched-{i}"}
        )
        assert status == 200
    root = _predictions_dir(served)
    today = root / f"date={datetime.now(UTC).date().isoformat()}"
    torn = today / "part-torn.jsonl"  # as a server would leave it mid-write
    torn.write_text('{"request_id": "whole"}\n{"request_id": "half')
    owner = root.stat()
    os.chown(torn, owner.st_uid, owner.st_gid)
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(minutes=1)

    got = download_window(_admin(served), start, end, tmp_path / "logs")
    folders, size = got.folders, got.fetched

    assert [f.name for f in folders] == [today.name]
    on_server = {p.name: p.read_bytes() for p in today.glob("part-*.jsonl")}
    downloaded = {p.name: p.read_bytes() for p in folders[0].iterdir()}
    assert set(downloaded) == set(on_server)
    assert downloaded["part-torn.jsonl"] == b'{"request_id": "whole"}\n'
    for name, body in downloaded.items():
        assert on_server[name].startswith(body) and body.endswith(b"\n"), name
    assert size == sum(len(b) for b in downloaded.values())
    fetched = {r["request_id"] for r in read_records(tmp_path / "logs")}
    assert {f"fetched-{i}" for i in range(5)} | {"whole"} <= fetched
    # A window of days with no logs is empty, not an error.
    none = download_window(_admin(served), start - timedelta(days=900),
                           start - timedelta(days=899), tmp_path / "none")  # fmt: skip
    assert (none.folders, none.fetched, none.cached) == ([], 0, 0)

    # The prediction key is not the admin token; names outside the layout are not served.
    with pytest.raises(ServerRefusedError, match="HTTP 401"):
        download_window(_public(served), start, end, tmp_path / "refused")
    admin = served["server"].secret("admin_token")
    url = served["server"].url
    for path in (
        f"/admin/logs/{today.name[5:]}/state.json",
        "/admin/logs/..%2Fstate/state.json",
        f"/admin/logs/{today.name[5:]}/..%2F..%2Fstate%2Fstate.json",
        "/admin/logs?start=yesterday&end=now",
    ):
        assert _bare(url + path, token=admin) in (404, 422), path
    assert _bare(url + f"/admin/logs/{today.name[5:]}/part-torn.jsonl") == 401
    torn.unlink()


def _ranged(url: str, token: str, range_header: str) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                   "Range": range_header})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_a_workers_log_cache_fetches_only_what_the_server_appended(served, tmp_path):
    """A worker that downloaded a window keeps it and, the next time, asks the server
    only for the bytes appended since (``Range: bytes=N-``); every window it hands out
    is byte for byte the server's whole lines, and a window already handed out (hard
    links) never changes when the cache grows."""
    from datetime import timedelta

    from mlops_pack.served_logs import download_window, prune_idle

    public, admin = _public(served), _admin(served)
    rows, _ = sample_rows(served)

    def serve(prefix: str, count: int) -> None:
        for i in range(count):
            status, _, _ = public.call(
                "POST", "/predict", {"rows": rows[:3]}, headers={"X-Request-Id": f"{prefix}{i}"}
            )
            assert status == 200

    def on_server() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in today.glob("part-*.jsonl")}

    def window(name: str):
        now = datetime.now(UTC)
        got = download_window(admin, now - timedelta(hours=1), now + timedelta(minutes=1),
                              tmp_path / name, cache)  # fmt: skip
        files = {p.name: p.read_bytes() for p in (tmp_path / name / today.name).iterdir()}
        return got, files

    caches = tmp_path / "caches"
    cache = caches / "churn" / "0123456789abcdef"  # as the operator lays them out
    serve("cached-a", 3)
    today = _predictions_dir(served) / f"date={datetime.now(UTC).date().isoformat()}"
    first, first_files = window("first")
    assert first_files == on_server() and first.cached == 0
    assert first.fetched == sum(map(len, first_files.values())) > 0

    serve("cached-b", 2)  # appended: the next window fetches those bytes only
    second, second_files = window("second")
    # The running server's part file (earlier tests' restarts left others, which stay).
    held = max(second_files, key=lambda name: (today / name).stat().st_mtime)
    grown = len(second_files[held]) - len(first_files.get(held, b""))
    assert second_files == on_server() and grown > 0
    assert (second.fetched, second.cached) == (grown, first.fetched)
    assert {p.name: p.read_bytes() for p in (tmp_path / "first" / today.name).iterdir()} \
        == first_files  # the window handed out first did not change  # fmt: skip
    again, _ = window("again")
    assert (again.fetched, again.cached) == (0, first.fetched + grown)

    # With no window holding the files, the cache grows them in place.
    for name in ("first", "second", "again"):
        shutil.rmtree(tmp_path / name)
    inode = (cache / today.name / held).stat().st_ino
    serve("cached-c", 1)
    third, third_files = window("third")
    assert (cache / today.name / held).stat().st_ino == inode
    assert third_files == on_server() and third.cached == first.fetched + grown
    assert third.fetched == len(third_files[held]) - len(second_files[held]) > 0

    # A cached file cut off inside a line (a crash), longer than the server's, or whose
    # end does not fall on the server's line ends (not the file the server has: one
    # byte short at its start here) is fetched again whole; the others come from cache.
    cached_file = cache / today.name / held
    total = sum(map(len, on_server().values()))
    damages = (lambda b: b[:-5], lambda b: b + b'{"request_id": "x"}\n', lambda b: b[1:])
    for cut, damage in enumerate(damages):
        cached_file.write_bytes(damage(cached_file.read_bytes()))
        fixed, fixed_files = window(f"fixed-{cut}")
        assert fixed_files == on_server()
        assert (fixed.fetched, fixed.cached) == (len(fixed_files[held]), total - fixed.fetched)

    # Days no window has read for CACHE_IDLE_DAYS go, from every cache under the root
    # (another model's or server's too); a day read lately stays, in the window or not;
    # a cache another process is updating (its lock held) is left for the next time.
    def day(cache_dir, name: str, age_days: float):
        folder = cache_dir / f"date={name}"
        folder.mkdir(parents=True)
        (folder / "part-1.jsonl").write_bytes(b"{}\n")
        (cache_dir / ".lock").touch()
        stamp = time.time() - age_days * 86400
        os.utime(folder, (stamp, stamp))
        return folder

    stale, recent = day(cache, "2000-01-01", 9), day(cache, "2000-01-02", 1)
    elsewhere = day(caches / "retired-model" / "0123456789abcdef", "2000-01-01", 9)
    busy = day(caches / "busy-model" / "0123456789abcdef", "2000-01-01", 9)
    with (busy.parent / ".lock").open("a") as held_lock:
        fcntl.flock(held_lock, fcntl.LOCK_EX)
        assert sorted(prune_idle(caches)) == sorted([stale, elsewhere])
    assert not stale.exists() and not elsewhere.exists()
    assert recent.exists() and busy.exists() and (cache / today.name / held).exists()

    # The route itself: from an offset (206, to the whole lines' end), at or past that
    # end (416), other range forms the whole file (200).
    url = f"{served['server'].url}/admin/logs/{today.name[5:]}/{held}"
    token = served["server"].secret("admin_token")
    body = on_server()[held]
    status, headers, sent = _ranged(url, token, "bytes=10-")
    assert (status, sent) == (206, body[10:])
    assert headers["Content-Range"] == f"bytes 10-{len(body) - 1}/{len(body)}"
    for past in (len(body), len(body) + 1000):
        status, headers, _ = _ranged(url, token, f"bytes={past}-")
        assert (status, headers["Content-Range"]) == (416, f"bytes */{len(body)}")
    status, _, sent = _ranged(url, token, "bytes=0-10")
    assert (status, sent) == (200, body)
