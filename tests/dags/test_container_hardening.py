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
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    assert "/tmp" in host["Tmpfs"]
    assert info["Config"]["User"] == "65534:65534"
    mounts = [m["Source"] for m in info["Mounts"]]
    assert not any("docker.sock" in m for m in mounts)
    assert all(m["RW"] is False for m in info["Mounts"])
    worker.join(timeout=60)
    assert _inspect(name) is None  # removed on success


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


def test_the_bootstrap_kernel_loads_compiled_from_the_image():
    """The image's compiled kernel is used on a read-only root with a noexec tmpfs: the
    bootstrap loads it from the cache the image seeds, and compiles nothing."""
    code = (
        "from mlops_pack.steps.bootstrap_kernel import score_block, warm\n"
        "warm()\n"
        "stats = score_block.stats\n"
        "print('kernel cache', sum(stats.cache_hits.values()), 'hits',"
        " sum(stats.cache_misses.values()), 'misses')\n"
        "raise SystemExit(0 if stats.cache_hits and not stats.cache_misses else 3)\n"
    )
    name = f"mlops-kernel-{time.time_ns()}"
    assert container.run(_client(), _spec(name, code), LOG) == 0
