"""The local stand-in for tecnativa/docker-socket-proxy (the ``docker-proxy`` service of
docker-compose.yaml, include/docker/local/docker-proxy.Dockerfile), built and run with
the settings the shipped file gives the service: its environment, ``cap_drop``,
``security_opt``, the socket's volume, its memory limit and its health check, all read
from the file, so the test follows it. The workers reach Docker only through this proxy,
so what it forwards is what they can do, and what it refuses is what a compromised
worker cannot.

On a network of its own, a client container (the task image, with a step's hardening)
talks to ``http://<proxy>:2375`` as the workers do: the ping, the version and the
container and image listings pass; a container is created, started, waited on, given a
file and read back, and removed through the proxy, with raw HTTP and with the Docker SDK
the workers use (its log stream arriving while the container runs); every other API
section is refused with 403, also behind an API version or a ``..`` segment. A second
proxy with POST=0 is read-only, and a third, without the shipped section variables,
shows the contract's defaults and its ALLOW_START / ALLOW_RESTARTS exceptions. The
proxy runs as root without any capability, listens on IPv4 only (DISABLE_IPV6=1),
starts under an open-file limit of 1024 and stops at once on SIGTERM. Everything started
is removed, and checked gone, at the end.

The official image cannot be pulled here; that it honours the same contract rests on its
README and configuration (v0.3.0), not on this test."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml
from stack_support import wait_until
from support import ROOT

pytestmark = pytest.mark.timeout(300)

COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "include/docker/local/docker-proxy.Dockerfile"
PROXY_IMAGE = "mlops-pack-local-docker-proxy:latest"
CLIENT_IMAGE = "mlops-pack-task:latest"
LABEL = "mlops-pack.test.docker-proxy"  # on everything the test starts: its run's id

# What the shipped settings let through (each answered 200 by Docker itself).
FORWARDED = [
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/version"),
    ("GET", "/v1.41/version"),
    ("GET", "/containers/json"),
    ("GET", "/v1.41/containers/json?all=1"),
    ("GET", "/images/json"),
    ("GET", "/events?since=0&until=1"),
]
# What they refuse: every section but containers, images and the harmless defaults,
# also with an API version in front or a path that leaves the containers section.
REFUSED = [
    ("GET", "/info"),
    ("GET", "/v1.41/info"),
    ("GET", "/volumes"),
    ("POST", "/volumes/create"),
    ("GET", "/networks"),
    ("POST", "/v1.41/networks/create"),
    ("POST", "/build"),
    ("POST", "/exec/0123456789ab/start"),
    ("POST", "/commit?container=0123456789ab"),
    ("GET", "/system/df"),
    ("GET", "/swarm"),
    ("GET", "/secrets"),
    ("GET", "/configs"),
    ("GET", "/services"),
    ("GET", "/tasks"),
    ("GET", "/nodes"),
    ("GET", "/plugins"),
    ("GET", "/auth"),
    ("POST", "/auth"),
    ("GET", "/distribution/x/json"),
    ("POST", "/session"),
    ("GET", "/containers/../info"),
    ("GET", "/v1.41/containers/%2e%2e/info"),
    ("GET", "//info"),
]

# Run by Python in the client container: the status of each request in $CHECKS (those
# with a third item "config" send a valid container configuration, labelled with the
# run), and with $LIFECYCLE a container's life through the raw API; JSON on stdout.
CLIENT = r"""
import io, json, os, tarfile, urllib.error, urllib.request

BASE = os.environ["PROXY"]

class Unfollowed(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):  # a redirect is an answer of its own here
        return None

OPEN = urllib.request.build_opener(Unfollowed).open

def call(method, path, body=None, content_type=None):
    request = urllib.request.Request(BASE + path, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with OPEN(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()

CONFIG = json.dumps({
    "Image": os.environ["IMAGE"],
    "Entrypoint": ["true"],
    "Labels": {os.environ["LABEL"]: os.environ["RUN"]},
    "HostConfig": {"NetworkMode": "none"},
}).encode()

found = {"statuses": {}}
for method, path, *sent in json.loads(os.environ["CHECKS"]):
    body = (CONFIG, "application/json") if sent == ["config"] else (None, None)
    found["statuses"][f"{method} {path}"] = call(method, path, *body)[0]
found["ping"] = call("GET", "/_ping")[1].decode()

def lifecycle():
    life = {}
    code, body = call("POST", f"/v1.41/containers/create?name={os.environ['NAME']}",
                      CONFIG, "application/json")
    life["create"] = code
    cid = json.loads(body)["Id"]
    life["start"] = call("POST", f"/containers/{cid}/start")[0]
    code, body = call("POST", f"/containers/{cid}/wait")
    life["wait"] = [code, json.loads(body).get("StatusCode")]
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        data = f"through the proxy {os.environ['RUN']}\n".encode()
        entry = tarfile.TarInfo("proxy-probe.txt")
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))
    life["put_archive"] = call("PUT", f"/containers/{cid}/archive?path=/tmp",
                               packed.getvalue(), "application/x-tar")[0]
    code, body = call("GET", f"/containers/{cid}/archive?path=/tmp/proxy-probe.txt")
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        life["get_archive"] = [code, tar.extractfile("proxy-probe.txt").read().decode()]
    life["delete"] = call("DELETE", f"/containers/{cid}?force=1")[0]
    life["after_delete"] = call("GET", f"/containers/{cid}/json")[0]
    return life

if os.environ.get("LIFECYCLE"):
    found["lifecycle"] = lifecycle()
print(json.dumps(found))
"""

# The pack's own client (docker.APIClient over tcp://, as the workers' DOCKER_HOST):
# a container that prints, sleeps and prints again, its log followed while it runs.
SDK_CLIENT = r"""
import json, os, time
import docker

client = docker.APIClient(base_url=os.environ["PROXY"].replace("http://", "tcp://"))
container = client.create_container(
    os.environ["IMAGE"], entrypoint=["sh", "-c"], command=["echo first; sleep 3; echo second"],
    name=os.environ["NAME"], labels={os.environ["LABEL"]: os.environ["RUN"]},
    host_config=client.create_host_config(network_mode="none"),
)
client.start(container)
began, arrivals = time.monotonic(), []
for chunk in client.logs(container, stream=True, follow=True):
    for line in chunk.decode().split():
        arrivals.append([line, time.monotonic() - began])
status = client.wait(container)["StatusCode"]
client.remove_container(container, force=True)
print(json.dumps({"api_version": client.api_version, "arrivals": arrivals, "status": status}))
"""


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0 or not check, (args[:2], done.stderr[-3000:])
    return done.stdout


def _shipped_service() -> dict:
    """The ``docker-proxy`` service as docker-compose.yaml defines it."""
    return yaml.safe_load(COMPOSE.read_text())["services"]["docker-proxy"]


def _environment(service: dict) -> dict[str, str]:
    given = service["environment"]
    if isinstance(given, list):  # the KEY=value form
        given = dict(item.split("=", 1) for item in given)
    return {name: str(value) for name, value in given.items()}


def _health_command(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and len(test) == 2, test
    return test[1]


def _start_proxy(
    service: dict, name: str, network: str, run: str, env: dict[str, str], *extra: str
) -> None:
    """The proxy image as ``service`` runs it (``env`` for its environment, ``extra``
    flags added), detached."""
    flags = [f"--env={key}={value}" for key, value in env.items()]
    flags += [f"--cap-drop={cap}" for cap in service["cap_drop"]]
    flags += [f"--security-opt={option}" for option in service["security_opt"]]
    for volume in service["volumes"]:
        assert volume.startswith("/"), volume  # a host path, as `docker run -v` reads it
        flags.append(f"--volume={volume}")
    health = service["healthcheck"]
    flags += [f"--health-cmd={_health_command(service)}",
              f"--health-interval={health['interval']}", f"--health-retries={health['retries']}",
              f"--memory={service['mem_limit']}", *extra]  # fmt: skip
    _docker("run", "-d", f"--name={name}", f"--network={network}", f"--label={LABEL}={run}",
            *flags, PROXY_IMAGE)  # fmt: skip


def _inspect(name: str) -> dict:
    return json.loads(_docker("inspect", name))[0]


def _healthy_by_its_check(service: dict, name: str) -> bool:
    """The shipped health check, run in the proxy (which must not have exited)."""
    state = _inspect(name)["State"]
    assert state["Status"] != "exited", (name, state, _docker("logs", name, check=False))
    return _exec_status(name, service) == 0


def _exec_status(name: str, service: dict) -> int:
    done = subprocess.run(["docker", "exec", name, "sh", "-c", _health_command(service)],
                          capture_output=True, timeout=30, check=False)  # fmt: skip
    return done.returncode


def _leftovers(run: str) -> dict[str, list[str]]:
    return {
        "containers": _docker("ps", "-aq", "--filter", f"label={LABEL}={run}").split(),
        "networks": _docker("network", "ls", "-q", "--filter", f"label={LABEL}={run}").split(),
    }


@pytest.fixture(scope="module")
def proxies() -> Iterator[dict]:
    """Three proxies on a fresh network: the shipped settings, the same with POST=0, and
    only POST=1, ALLOW_START=1 and ALLOW_RESTARTS=1 (every section at its default)."""
    _docker("build", "--network", "host", "-q", "-f", str(DOCKERFILE),
            "--build-arg", "BASE_IMAGE=mlops-pack-base:bookworm", "-t", PROXY_IMAGE, str(ROOT),
            timeout=900)  # fmt: skip
    service = _shipped_service()
    run = uuid.uuid4().hex
    network = f"mlops-proxy-test-{run}"
    names = {kind: f"mlops-proxy-{kind}-{run[:12]}" for kind in ("shipped", "read-only", "bare")}
    shipped = _environment(service)
    settings = {
        "shipped": shipped,
        "read-only": {**shipped, "POST": "0"},
        "bare": {"POST": "1", "ALLOW_START": "1", "ALLOW_RESTARTS": "1"},
    }
    try:
        _docker("network", "create", f"--label={LABEL}={run}", network)
        for kind, name in names.items():
            _start_proxy(service, name, network, run, settings[kind])
        for name in names.values():
            wait_until(lambda name=name: _healthy_by_its_check(service, name),
                       f"{name}'s health check", timeout=60)  # fmt: skip
        yield {"run": run, "network": network, "names": names, "service": service}
    finally:
        for name in names.values():
            print(name, _docker("logs", "--tail", "15", name, check=False), sep="\n")
        for container in _leftovers(run)["containers"]:
            _docker("rm", "-f", "-v", container, check=False)
        _docker("network", "rm", network, check=False)
        assert _leftovers(run) == {"containers": [], "networks": []}


def _client(proxies: dict, proxy: str, script: str, **env: str) -> dict:
    """``script``'s JSON, run by Python in the task image on the proxies' network with a
    step's hardening, talking to ``proxy``."""
    env = {"PROXY": f"http://{proxies['names'][proxy]}:2375", "IMAGE": CLIENT_IMAGE,
           "LABEL": LABEL, "RUN": proxies["run"], **env}  # fmt: skip
    printed = _docker(
        "run", "--rm", f"--network={proxies['network']}", f"--label={LABEL}={proxies['run']}",
        "--user=65534:65534", "--read-only", "--cap-drop=ALL",
        "--security-opt=no-new-privileges", *[f"--env={k}={v}" for k, v in env.items()],
        "--entrypoint=python", CLIENT_IMAGE, "-c", script,
    )  # fmt: skip
    return json.loads(printed.strip().splitlines()[-1])


def _listening(name: str, table: str) -> list[str]:
    """The local addresses of the container's listening sockets (hex, as the kernel's
    /proc/net/<table> lists them)."""
    rows = [
        line.split() for line in _docker("exec", name, "cat", f"/proc/net/{table}").splitlines()
    ]
    return [row[1] for row in rows[1:] if row[3] == "0A"]


def _statuses(proxies: dict, proxy: str, checks: list[tuple[str, ...]], **env: str) -> dict:
    return _client(proxies, proxy, CLIENT, CHECKS=json.dumps(checks), **env)


def test_the_shipped_settings_forward_containers_and_images_and_refuse_the_rest(proxies):
    """Ping, version, events and the container and image sections reach Docker; a
    container's life (create, start, wait, an archive put in and read back, removal)
    goes through; every other section is answered 403 by the proxy itself."""
    # The shipped file lets DOCKER_PROXY_IMAGE replace the official image.
    assert proxies["service"]["image"].startswith("${DOCKER_PROXY_IMAGE:-"), proxies["service"]
    name = f"mlops-proxy-probe-{proxies['run'][:12]}"
    found = _statuses(proxies, "shipped", FORWARDED + REFUSED, LIFECYCLE="1", NAME=name)
    assert found["ping"] == "OK"
    forwarded = {f"{m} {p}": found["statuses"][f"{m} {p}"] for m, p in FORWARDED}
    assert forwarded == dict.fromkeys(forwarded, 200), forwarded
    refused = {f"{m} {p}": found["statuses"][f"{m} {p}"] for m, p in REFUSED}
    assert refused == dict.fromkeys(refused, 403), refused
    assert found["lifecycle"] == {
        "create": 201,
        "start": 204,
        "wait": [200, 0],
        "put_archive": 200,
        "get_archive": [200, f"through the proxy {proxies['run']}\n"],
        "delete": 204,
        "after_delete": 404,
    }, found["lifecycle"]


def test_the_pack_s_docker_client_streams_a_container_s_log_through_it(proxies):
    """docker.APIClient over tcp:// (the workers' DOCKER_HOST) negotiates its API version
    through the proxy and gets a followed log line by line while the container runs,
    not at its end."""
    name = f"mlops-proxy-stream-{proxies['run'][:12]}"
    found = _client(proxies, "shipped", SDK_CLIENT, NAME=name)
    engine = json.loads(_docker("version", "--format", "{{json .Server}}"))
    assert found["api_version"] == engine["ApiVersion"], found
    assert [line for line, _ in found["arrivals"]] == ["first", "second"], found
    (_, first), (_, second) = found["arrivals"]
    assert second - first > 2.0, found  # three seconds apart, as printed
    assert found["status"] == 0, found


def test_post_0_makes_every_section_read_only(proxies):
    """The shipped settings with POST=0: listings pass, anything but GET and HEAD is
    refused, even in the container section."""
    never = f"mlops-proxy-never-ro-{proxies['run'][:12]}"
    checks = [
        ("GET", "/containers/json"),
        ("HEAD", "/_ping"),
        ("GET", "/images/json"),
        ("POST", f"/containers/create?name={never}", "config"),
        ("POST", "/containers/0123456789ab/start"),
        ("DELETE", "/containers/0123456789ab?force=1"),
        ("PUT", "/containers/0123456789ab/archive?path=/tmp"),
        ("POST", "/images/create?fromImage=busybox"),
    ]
    found = _statuses(proxies, "read-only", checks)["statuses"]
    assert list(found.values()) == [200, 200, 200, 403, 403, 403, 403, 403], found
    assert _docker("ps", "-aq", "--filter", f"name=^{never}$") == ""


def test_unset_sections_take_the_contract_s_defaults_and_the_start_exceptions(proxies):
    """Without the section variables only ping, version and events pass; ALLOW_START
    and ALLOW_RESTARTS let a container be started, stopped, restarted and killed (Docker
    answers 404 for the unknown container: the request reached it) but nothing else of
    the container section."""
    never = f"mlops-proxy-never-bare-{proxies['run'][:12]}"
    checks = [
        ("GET", "/_ping"),
        ("GET", "/version"),
        ("GET", "/events?since=0&until=1"),
        ("GET", "/containers/json"),
        ("GET", "/images/json"),
        ("GET", "/info"),
        ("POST", "/containers/0123456789ab/start"),
        ("POST", "/v1.41/containers/0123456789ab/stop"),
        ("POST", "/containers/0123456789ab/restart"),
        ("POST", "/containers/0123456789ab/kill"),
        ("POST", f"/containers/create?name={never}", "config"),
        ("POST", "/containers/0123456789ab/pause"),
        ("DELETE", "/containers/0123456789ab"),
    ]
    found = _statuses(proxies, "bare", checks)["statuses"]
    assert list(found.values()) == [200] * 3 + [403] * 3 + [404] * 4 + [403] * 3, found
    assert _docker("ps", "-aq", "--filter", f"name=^{never}$") == ""


def test_it_runs_as_root_without_capabilities_on_ipv4_only(proxies):
    """The shipped hardening is in force (no capability, no new privileges, root for the
    root-owned socket), HAProxy listens on 0.0.0.0:2375 and not on IPv6, and Docker's
    own run of the shipped health check reports the proxy healthy."""
    name = proxies["names"]["shipped"]
    host = _inspect(name)["HostConfig"]
    assert host["CapDrop"] == proxies["service"]["cap_drop"] == ["ALL"], host["CapDrop"]
    assert host["SecurityOpt"] == proxies["service"]["security_opt"], host["SecurityOpt"]
    status = _docker("exec", name, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split()[0] == "0", fields["Uid"]
    assert int(fields["CapEff"], 16) == int(fields["CapPrm"], 16) == 0, fields
    assert fields["NoNewPrivs"].strip() == "1", fields["NoNewPrivs"]
    port = f"{2375:04X}"
    listening = {"ipv4": _listening(name, "tcp"), "ipv6": _listening(name, "tcp6")}
    assert f"00000000:{port}" in listening["ipv4"], listening
    assert not [address for address in listening["ipv6"] if address.endswith(port)], listening
    wait_until(lambda: _inspect(name)["State"]["Health"]["Status"] == "healthy",
               "Docker's health check of the proxy", timeout=90, passing=(KeyError,))  # fmt: skip


def test_it_starts_under_a_low_file_limit_and_stops_at_once_on_sigterm(proxies):
    """Under an open-file limit of 1024 (which it cannot raise without capabilities) the
    proxy still starts and answers; `docker stop` (SIGTERM) ends it in well under
    Docker's 10 s grace, with exit code 0: HAProxy runs under its master process, which
    handles the signal (HAProxy alone, as PID 1, would ignore it)."""
    name = f"mlops-proxy-stop-{proxies['run'][:12]}"
    service = proxies["service"]
    _start_proxy(service, name, proxies["network"], proxies["run"], _environment(service),
                 "--ulimit=nofile=1024:1024")  # fmt: skip
    wait_until(lambda: _healthy_by_its_check(service, name), f"{name}'s health check", 60)
    began = time.monotonic()
    _docker("stop", name)
    took = time.monotonic() - began
    state = _inspect(name)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
    assert took < 5, took


def test_a_step_outlives_the_proxy_s_idle_timeout(proxies):
    """The official proxy cuts a request silent for 10 minutes, and a step's ``wait`` is
    silent until the step exits (as is its followed log while it prints nothing). A
    proxy cutting after 3 s (this stand-in's IDLE_TIMEOUT) shows the cut is real (a bare
    ``wait`` through it fails), and that the pack's container runner, through the same
    proxy, still gets a 7-second silent step's exit code and each of its lines once."""
    import logging

    import docker
    from mlops_pack.airflow import container
    from requests.exceptions import ChunkedEncodingError
    from support import free_port

    service, run = proxies["service"], proxies["run"]
    port = free_port()
    name = f"mlops-proxy-cut-{run[:12]}"
    _start_proxy(service, name, proxies["network"], run,
                 {**_environment(service), "IDLE_TIMEOUT": "3s"},
                 f"--publish=127.0.0.1:{port}:2375")  # fmt: skip
    wait_until(lambda: _healthy_by_its_check(service, name), f"{name}'s health check", 60)
    client = docker.APIClient(base_url=f"tcp://127.0.0.1:{port}", version="auto", timeout=60)

    bare = client.create_container(CLIENT_IMAGE, entrypoint=["sleep"], command=["6"],
                                   labels={LABEL: run})["Id"]  # fmt: skip
    client.start(bare)
    began = time.monotonic()
    # Docker answers the headers at once; the proxy then ends the silent body.
    with pytest.raises(ChunkedEncodingError):
        client.wait(bare)
    assert time.monotonic() - began < 5.5  # the proxy's cut, not the container's end

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger(f"proxy-cut-{run}")
    log.addHandler(Collect())
    log.setLevel(logging.INFO)
    script = ("import time; print('before', flush=True); time.sleep(7); "
              "print('after', flush=True); raise SystemExit(3)")  # fmt: skip
    spec = container.ContainerSpec(
        image=CLIENT_IMAGE, command=["-c", script], entrypoint=["python"],
        name=f"mlops-proxy-step-{run[:12]}", user="65534:65534", labels={LABEL: run},
        timeout_seconds=120,
    )  # fmt: skip
    began = time.monotonic()
    assert container.run(client, spec, log) == 3
    assert time.monotonic() - began > 7
    assert lines == ["before", "after"], lines
