"""The benchmark harness: no ratio for a failed DAG run; probes run under the step hardening."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import _common
import bench_orchestration as orch


def _task(state: str, start: float, end: float, **extra) -> dict:
    return {"state": state, "try_number": 1, "start": start, "end": end, **extra}


def _run(index: int, state: str, deploy: dict) -> dict:
    """A run as the benchmark's child records it (times in seconds since an origin)."""
    step = {"launched": None, "result_written": None, "seconds": None, "fit_seconds": None}
    tasks = {
        "run_overrides": _task("success", 1.0, 1.5),
        "validate": _task("success", 2.0, 6.0, **{**step, "launched": 2.5, "seconds": 2.0,
                                                   "result_written": 5.5}),
        "train": _task("success", 6.5, 12.0, **{**step, "launched": 7.0, "seconds": 4.0,
                                                 "result_written": 11.5, "fit_seconds": 3.0}),
        "evaluate": _task("success", 12.5, 16.0, **{**step, "launched": 13.0, "seconds": 2.0,
                                                     "result_written": 15.5}),
        "gate": _task("success", 16.5, 18.0, **{**step, "launched": 17.0,
                                                 "result_written": 17.5, "verdict": "promote"}),
        "challenger_passed": _task("success", 18.2, 18.4),
        "deploy": deploy,
        "promote": _task("upstream_failed" if state == "failed" else "success", 25.0, 25.0),
    }  # fmt: skip
    return {"run": index, "batch": "b.csv", "run_id": f"r{index}", "state": state,
            "called": 0.0, "returned": 26.0, "wall": 26.0, "loadavg": "1 1 1",
            "meter": {"wall": 26.0, "cpu": 10.0, "other_cpu": 1.0}, "tasks": tasks}  # fmt: skip


def test_a_failed_run_is_reported_as_a_failure_without_a_ratio(capsys):
    error = "The conn_id `mlops_pack_server_churn` isn't defined"
    failed = _task("failed", 18.5, 24.0, error=error)
    ok = _task("success", 18.5, 24.0, launched=19.0, result_written=23.0, seconds=3.5)
    runs = [_run(1, "failed", failed), _run(2, "success", ok)]
    entry = {"rows": 100_000, "runner": "docker", "runs": runs}
    entry["analysis"] = [orch.analyse(run) for run in runs]
    orch.print_results([entry])
    orch.print_summary([entry])
    out = capsys.readouterr().out
    # Table rows: "100,000 docker <run> ..." (the per-run breakdown says "rows, docker,").
    lines = [line.split() for line in out.splitlines()]
    lines = [line for line in lines if line[:2] == ["100,000", "docker"]]
    failed_lines = [line for line in lines if line[3] == "FAILED"]
    assert len(failed_lines) == 1 and failed_lines[0][2] == "1", out
    assert "deploy failed" in out and "mlops_pack_server_churn" in out
    # Run 2 gets its ratio (26 s over validate + train + evaluate + deploy = 11.5 s)...
    assert any(line[2] == "2" and "2.26" in line for line in lines), out
    # ...and run 1 gets none, in either table.
    assert [line[2] for line in lines if line[3] != "FAILED"] == ["2", "2"], out


def test_probe_containers_run_under_the_step_containers_hardening(task_image):
    from mlops_pack.airflow.container import ContainerLimits

    argv = _common.docker_run(
        task_image,
        ["-c", (
            "import os, socket\n"
            "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
            "print(os.getuid(), status['CapEff'].strip(), status['NoNewPrivs'].strip())\n"
            "print(sorted(os.listdir('/sys/class/net')))\n"
            "pids = [p for p in ('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max')\n"
            "        if os.path.exists(p)]\n"
            "print(open(pids[0]).read().strip())\n"
            "try:\n    open('/usr/probe', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
            "weight = [p for p in ('/sys/fs/cgroup/cpu/cpu.shares', '/sys/fs/cgroup/cpu.weight')\n"
            "          if os.path.exists(p)]\n"
            "print(open(weight[0]).read().strip())\n"
        )],
    )  # fmt: skip
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split("\n")
    assert out[0] == "65534 0000000000000000 1"  # nobody, no capabilities, no new privileges
    assert out[1] == "['lo']"  # no network
    assert out[2] == str(ContainerLimits().pids)
    assert out[3] == "30"  # EROFS: the root filesystem is read-only
    # A quarter of the default CPU weight: cgroup v1's shares, or v2's weight for them.
    assert out[4] in ("256", "10"), out[4]


def test_an_untranslated_hardening_setting_stops_the_probe(monkeypatch):
    from mlops_pack.airflow import container

    # A setting the library may add one day (no way to add one for real from a test).
    real = container.host_config
    monkeypatch.setattr(container, "host_config", lambda c, s: {**real(c, s), "Sysctls": {"a": 1}})
    with pytest.raises(SystemExit, match="Sysctls"):
        _common.docker_run("any-image", ["-c", "pass"])


def test_the_scale_out_ratio_weighs_both_pairs_of_its_a_b_b_a_order():
    import bench_scale_out as scale

    def phase(wall: float, cpu: float) -> dict:
        # The CPU is read over the polled window, 2 s longer than the phase.
        return {"wall_s": wall, "noticed_after_s": wall + 2.0, "other_cpu_s": cpu}

    assert [label for label, _ in scale.PHASES] == ["two_a", "one_a", "one_b", "two_b"]
    phases = {
        "two_a": phase(135.0, 256.0 * 137.0 / 135.0),
        "one_a": phase(209.0, 270.0),
        "one_b": phase(200.0, 255.0),
        "two_b": phase(105.0, 200.0 * 107.0 / 105.0),
    }
    got = scale.ratios(phases, cores=2)
    # One worker's 409 s over two workers' 240 s; each pair's own ratio beside it.
    assert got["ratio"] == 1.704
    assert (got["ratio_first_pair"], got["ratio_second_pair"]) == (1.548, 1.905)
    # Scaled to the phases' wall time, the two-worker phases' CPU is 256 + 200 = 456
    # CPU-s, 228 s on two cores at best: 409 / 228.
    assert got["cpu_bound_ratio"] == 1.79


def test_steal_and_busy_time_come_from_their_own_fields_of_proc_stat(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal (guest fields after are not read)
    stat.write_text("cpu  100 3 50 1000 20 4 5 7 0 0\ncpu0 50 1 25 500 10 2 2 3 0 0\n")
    busy, steal = _common._machine_seconds(stat)
    assert steal == 7 / tick
    assert busy == (100 + 3 + 50 + 4 + 5 + 7) / tick
    assert all(math.isnan(value) for value in _common._machine_seconds(tmp_path / "absent"))
    # The machine's own, over a Meter's window: steal is part of the busy time.
    with _common.Meter() as meter:
        sum(range(10**6))
    assert 0.0 <= meter.steal <= meter.other_cpu + meter.cpu
