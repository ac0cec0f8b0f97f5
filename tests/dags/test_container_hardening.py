"""Step containers carry every hardening flag and never outlive their task."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time

import pytest
from airflow.exceptions import AirflowException
from mlops_pack.airflow import container

LOG = logging.getLogger("test")


def _client():
    from airflow.providers.docker.hooks.docker import DockerHook

    return DockerHook(docker_conn_id=None, base_url="unix://var/run/docker.sock").api_client


def _inspect(name: str) -> dict | None:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=False)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def _spec(name: str, code: str, timeout: float | None = 60) -> container.ContainerSpec:
    from docker.types import Mount

    return container.ContainerSpec(
        image="mlops-pack-task:latest",
        entrypoint=["python", "-c"],
        command=[code],
        name=name,
        user="65534:65534",
        timeout_seconds=timeout,
        mounts=[
            Mount(
                "/opt/include",
                str(container.__file__).rsplit("/", 1)[0],
                type="bind",
                read_only=True,
            )
        ],
        limits=container.ContainerLimits(memory="512m", cpus=0.5, pids=64, tmpfs_size="64m"),
    )


@pytest.fixture(scope="module", autouse=True)
def image(task_image):
    """The build also tags the image ``latest``, which these tests run."""
    return task_image


def test_docker_inspect_shows_every_hardening_flag():
    name = f"mlops-hardening-{time.time_ns()}"
    client = _client()
    worker = threading.Thread(
        target=container.run, args=(client, _spec(name, "import time; time.sleep(8)"), LOG)
    )
    worker.start()
    info = None
    for _ in range(50):
        info = _inspect(name)
        if info and info["State"]["Running"]:
            break
        time.sleep(0.2)
    assert info is not None and info["State"]["Running"]
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 64
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000  # a real CPU quota, not only a weight
    assert host["CpuShares"] == 256  # and batch work's weight: the services beside it go first
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    assert "/tmp" in host["Tmpfs"]
    assert info["Config"]["User"] == "65534:65534"
    # Native thread pools sized to the quota (0.5 CPU: one thread), not the host's cores.
    assert {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1"} <= set(
        info["Config"]["Env"]
    )
    mounts = [m["Source"] for m in info["Mounts"]]
    assert not any("docker.sock" in m for m in mounts)
    assert all(m["RW"] is False for m in info["Mounts"])
    worker.join(timeout=60)
    assert _inspect(name) is None  # removed on success


# Exits 0 only if the step's libraries' native thread pools have the sizes in argv[1]
# (JSON: {"openblas": n, "openmp": n}), on a host showing the container more than one core.
_POOL_SIZES = """
import json, os, sys
import numpy, sklearn.ensemble, threadpoolctl
want = json.loads(sys.argv[1])
pools = threadpoolctl.threadpool_info()
print(os.cpu_count(), pools)
if (os.cpu_count() or 1) < 2:
    raise SystemExit(4)  # every pool would have one thread anyway: nothing shown
sizes = {p["internal_api"]: p["num_threads"] for p in pools}
raise SystemExit(0 if pools and all(sizes[k] == n for k, n in want.items()) else 3)
"""


def _pools(
    name: str, want: dict, image: str = "mlops-pack-task:latest", client=None, inspected=None,
    **environment,
):  # fmt: skip
    spec = _spec(name, _POOL_SIZES)
    spec.command = [_POOL_SIZES, json.dumps(want)]
    spec.image, spec.environment = image, environment
    return container.run(client or _client(), spec, LOG, image=inspected)


def test_a_steps_thread_pools_are_sized_to_its_quota_not_the_hosts_cores():
    # 0.5 CPU: one thread each, where OpenBLAS would otherwise start one per host core.
    assert _pools(f"mlops-threads-{time.time_ns()}", {"openblas": 1, "openmp": 1}) == 0


def test_a_steps_own_environment_and_its_images_settings_win():
    name = f"mlops-threads-{time.time_ns()}"
    assert _pools(name, {"openblas": 2, "openmp": 1}, OPENBLAS_NUM_THREADS="2") == 0
    tag = f"mlops-pack-task-omp2:{time.time_ns()}"
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input="FROM mlops-pack-task:latest\nENV OMP_NUM_THREADS=2\n",
        text=True, capture_output=True, check=True,
    )  # fmt: skip
    try:
        assert _pools(name, {"openblas": 1, "openmp": 2}, image=tag) == 0
        # The operator inspects the image before the run (to record its id) and hands the
        # inspection over: the image's settings still win, and the engine is not asked again.
        client, asked = _client(), []
        inspected = client.inspect_image(tag)
        real_inspect = client.inspect_image
        client.inspect_image = lambda image: asked.append(image) or real_inspect(image)
        assert _pools(name, {"openblas": 1, "openmp": 2}, tag, client, inspected) == 0
        assert asked == []
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.mark.parametrize(("cpus", "threads"), [(0.5, "1"), (1, "1"), (1.5, "2"), (2, "2")])
def test_the_pool_size_is_the_quota_rounded_up(cpus, threads):
    sizes = container.thread_environment(container.ContainerLimits(cpus=cpus))
    assert sizes == dict.fromkeys(container.THREAD_VARIABLES, threads)


def test_a_step_over_its_timeout_leaves_no_container_and_the_retry_succeeds():
    name = f"mlops-timeout-{time.time_ns()}"
    client = _client()
    with pytest.raises(AirflowException, match="did not finish within 2"):
        container.run(client, _spec(name, "import time; time.sleep(60)", timeout=2), LOG)
    assert _inspect(name) is None
    # The retry uses the same container name: no 409 conflict, and it runs to completion.
    assert container.run(client, _spec(name, "print('retry ok')"), LOG) == 0
    assert _inspect(name) is None


def test_a_failing_step_is_removed_too():
    name = f"mlops-fail-{time.time_ns()}"
    assert container.run(_client(), _spec(name, "raise SystemExit(7)"), LOG) == 7
    assert _inspect(name) is None


def test_a_leftover_container_from_a_killed_try_is_replaced():
    name = f"mlops-leftover-{time.time_ns()}"
    subprocess.run(
        ["docker", "create", "--name", name, "mlops-pack-task:latest"],
        check=True,
        capture_output=True,
    )
    assert container.run(_client(), _spec(name, "pass"), LOG) == 0
    assert _inspect(name) is None


def test_a_step_never_removes_another_stacks_container():
    """A container under the step's name is replaced only when it is this stack's own
    leftover; another stack's (or an unlabelled one) is left alone and the run refused."""
    client = _client()
    name = f"mlops-stack-{time.time_ns()}"
    spec = _spec(name, "print('ok')")
    spec.labels[container.STACK_LABEL] = "stack-a"
    client.create_container(
        image=spec.image, name=name, command=["true"], labels={container.STACK_LABEL: "stack-b"}
    )
    try:
        with pytest.raises(AirflowException, match="not this stack's"):
            container.run(client, spec, LOG)
        assert _inspect(name)["Config"]["Labels"][container.STACK_LABEL] == "stack-b"
    finally:
        client.remove_container(name, force=True)
    client.create_container(
        image=spec.image, name=name, command=["true"], labels={container.STACK_LABEL: "stack-a"}
    )
    assert container.run(client, spec, LOG) == 0  # our own leftover: replaced, no 409
    assert _inspect(name) is None


def test_step_containers_carry_their_stack_in_name_and_label(tmp_path):
    from mlops_pack.airflow.container import STACK_LABEL, stack_id

    first, second = tmp_path / "a" / ".mlops", tmp_path / "b" / ".mlops"
    assert stack_id(first) != stack_id(second) and stack_id(first) == stack_id(first)
    assert STACK_LABEL == "io.mlops-pack.stack"


# Caches the task image builds once and each step seeds into its tmpfs (the root is
# read-only): each program exits 0 only if its library used the image's cache.
KERNEL_FROM_IMAGE = (
    # The bootstrap's compiled kernel, on a noexec tmpfs: loaded, nothing compiled.
    "from mlops_pack.steps.bootstrap_kernel import score_block, warm\n"
    "warm()\n"
    "stats = score_block.stats\n"
    "print('kernel cache', sum(stats.cache_hits.values()), 'hits',"
    " sum(stats.cache_misses.values()), 'misses')\n"
    "raise SystemExit(0 if stats.cache_hits and not stats.cache_misses else 3)\n"
)
FONTS_FROM_IMAGE = (
    # matplotlib's font list for the reports' plots: read, not rebuilt (0.3 s a report).
    "import io, logging\n"
    "found = io.StringIO()\n"
    "log = logging.getLogger('matplotlib.font_manager')\n"
    "log.setLevel(logging.DEBUG); log.addHandler(logging.StreamHandler(found))\n"
    "from mlops_pack.steps.comparison_report import inline_svg, new_figure\n"
    "figure, axes = new_figure('t', 'x', 'y'); axes.plot([0, 1], [0, 1])\n"
    "svg = inline_svg(figure)\n"
    "text = found.getvalue(); print(text)\n"
    "used = 'Using fontManager instance from /tmp/matplotlib/' in text\n"
    "built = 'generated new fontManager' in text\n"
    "raise SystemExit(0 if used and not built and svg.startswith('<svg') else 3)\n"
)


@pytest.mark.parametrize("code", [KERNEL_FROM_IMAGE, FONTS_FROM_IMAGE], ids=["numba", "fonts"])
def test_a_step_uses_the_caches_built_into_the_image(code):
    name = f"mlops-cache-{time.time_ns()}"
    assert container.run(_client(), _spec(name, code), LOG) == 0


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_inputs_reach_a_step_as_copies_in_its_own_volume(tmp_path):
    """Without a shared file system the engine is told no host path: the work dir, the
    include folder (less the data folder inside it), the run's data file and the secrets
    are copied into the container's volume, owned by its user, and the secrets readable
    by that user alone; the lock's DSN is read from its file."""
    from docker.types import Mount
    from mlops_pack.airflow.container import Inbound, copy_in, copy_out

    include = tmp_path / "include"
    (include / "models").mkdir(parents=True)
    (include / "models" / "m.yaml").write_text("name: m\n")
    (include / "data" / "big").mkdir(parents=True)
    (include / "data" / "big" / "batch.csv").write_text("never copied\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "overrides.json").write_text("{}")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    dsn = "postgresql://mlops_lock:s3cret@db/mlops_lock"
    (secrets / "lock_dsn").write_text(dsn)
    batch = tmp_path / "elsewhere" / "m1.csv"
    batch.parent.mkdir()
    batch.write_bytes(b"a,b\n1,2\n" * 5000)
    items = [
        Inbound(run, "run", writable=True),
        Inbound(include, "include", skip=(include / "data",)),
        Inbound(batch, "data/churn/m1.csv"),
        Inbound(secrets, "secrets", private=True),
    ]
    code = (
        "import json, os\n"
        "from mlops_pack.settings import Settings\n"
        "seen = {}\n"
        "for root, dirs, files in os.walk('/work'):\n"
        "    for name in dirs + files:\n"
        "        s = os.stat(os.path.join(root, name))\n"
        "        seen[os.path.join(root, name)] = [oct(s.st_mode & 0o777), s.st_uid]\n"
        "open('/work/run/result.json', 'w').write(json.dumps(seen))\n"
        "dsn = open('/work/secrets/lock_dsn').read()\n"
        "print('lock dsn from file:', Settings.from_env().lock_dsn == dsn)\n"
    )
    spec = container.ContainerSpec(
        image="mlops-pack-task:latest",
        entrypoint=["python", "-c"],
        command=[code],
        name=f"mlops-copy-in-{time.time_ns()}",
        user="65534:65534",
        timeout_seconds=120,
        mounts=[Mount("/work", None, type="volume")],
        environment={"MLOPS_PACK_LOCK_DSN_FILE": "/work/secrets/lock_dsn"},
        limits=container.ContainerLimits(memory="512m", cpus=0.5, pids=64, tmpfs_size="64m"),
    )
    client, log, lines, copied = _client(), logging.getLogger("test.copy-in"), _Lines(), []
    log.addHandler(lines)
    out = tmp_path / "result.json"
    try:
        code = container.run(
            client,
            spec,
            log,
            before_start=lambda cid: copied.append(copy_in(client, cid, "/work", items, spec.user)),
            after_exit=lambda cid: copy_out(client, cid, "/work/run/result.json", out),
        )
    finally:
        log.removeHandler(lines)
    assert code == 0, lines.lines
    assert "lock dsn from file: True" in lines.lines
    seen = json.loads(out.read_text())  # written by the step in its run folder, copied out
    assert not any(p.startswith("/work/include/data") for p in seen), seen
    assert seen["/work/include/models/m.yaml"] == ["0o444", 65534]
    assert seen["/work/include"] == ["0o555", 65534]
    assert seen["/work/data/churn/m1.csv"] == ["0o444", 65534]
    assert seen["/work/data"] == ["0o555", 65534]  # a folder above an item, the user's too
    assert seen["/work/secrets"] == ["0o500", 65534]
    assert seen["/work/secrets/lock_dsn"] == ["0o400", 65534]
    assert seen["/work/run"] == ["0o700", 65534]
    sizes = sum(p.stat().st_size for p in (run / "overrides.json", include / "models/m.yaml"))
    assert copied == [sizes + batch.stat().st_size + len(dsn)]
