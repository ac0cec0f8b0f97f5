"""Two stacks on one Docker engine: each names and labels its model servers, and never
removes the other's (real engine, real server containers)."""

from __future__ import annotations

import shutil

import pytest
from support import ROOT, free_port, open_dir


@pytest.fixture
def engine():
    import docker

    return docker.APIClient(base_url="unix://var/run/docker.sock")


def _include() -> object:
    include = open_dir("stack-inc-")
    shutil.copytree(ROOT / "include" / "models", include / "models", dirs_exist_ok=True)
    shutil.copytree(ROOT / "include" / "expectations", include / "expectations")
    for item in [include, *include.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return include


def _running(client, name: str) -> bool:
    from docker.errors import NotFound

    try:
        return client.inspect_container(name)["State"]["Running"]
    except NotFound:
        return False


def test_two_stacks_keep_their_own_model_servers(engine, task_image):
    from mlops_pack.airflow.model_server import STACK_LABEL, start_server, stop_server

    include = _include()
    homes = [open_dir("stack-a-home-"), open_dir("stack-b-home-")]
    started = []
    try:
        for home in homes:
            started.append(
                start_server(
                    engine,
                    model="churn",
                    include_dir=include,
                    home=home,
                    image=task_image,
                    secrets_dir=open_dir("stack-sec-"),
                    port=free_port(),
                )
            )
        a, b = started
        assert a.stack != b.stack and a.container != b.container
        assert a.stack in a.container
        labels = engine.inspect_container(a.container)["Config"]["Labels"]
        assert labels[STACK_LABEL] == a.stack
        assert labels["io.mlops-pack.home"] == str(homes[0].resolve())
        assert _running(engine, a.container) and _running(engine, b.container)

        # Stack B told to stop A's container (a stale handle, say): A keeps running.
        stop_server(engine, type(b)(b.model, a.port, a.container, b.secrets_dir, b.stack))
        assert _running(engine, a.container)

        stop_server(engine, b)
        assert not _running(engine, b.container) and _running(engine, a.container)
    finally:
        for served in started:
            stop_server(engine, served)


def test_a_container_of_another_owner_under_our_name_is_left_alone(engine, task_image):
    from mlops_pack.airflow.model_server import STACK_LABEL, container_name, stack_id, start_server

    include, home = _include(), open_dir("stack-c-home-")
    port = free_port()
    name = container_name("churn", port, stack_id(home))
    # Someone else's container that happens to carry the name this stack would use.
    engine.create_container(
        image=task_image, name=name, command=["true"], labels={STACK_LABEL: "another-stack"}
    )
    try:
        with pytest.raises(RuntimeError, match="not this stack's"):
            start_server(
                engine, model="churn", include_dir=include, home=home, image=task_image,
                secrets_dir=open_dir("stack-c-sec-"), port=port,
            )  # fmt: skip
        assert engine.inspect_container(name)["Config"]["Labels"][STACK_LABEL] == "another-stack"
    finally:
        engine.remove_container(name, force=True)
