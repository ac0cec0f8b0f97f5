"""Running one step in a hardened, always-removed container through the Docker provider.

The provider's DockerOperator cannot set a read-only root filesystem, ``cap_drop``,
``no-new-privileges``, a pids limit or a real CPU quota (its ``cpus`` is a relative
weight), so steps talk to the provider's hook directly and set them all.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.exceptions import AirflowException

LABEL = "io.mlops-pack.step"
# Which stack (store) a container belongs to: two checkouts on one engine never touch
# each other's containers, whatever their names.
STACK_LABEL = "io.mlops-pack.stack"
NOBODY = 65534


def stack_id(home: Path) -> str:
    """A short id for the stack that owns the store ``home``: same store, same id."""
    return hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:12]


def owner_of(client, name: str) -> str | None:
    """Stack id on container ``name``: ``""`` if unlabelled, None if there is no such container."""
    from docker.errors import NotFound

    try:
        labels = client.inspect_container(name)["Config"].get("Labels") or {}
    except NotFound:
        return None
    return labels.get(STACK_LABEL, "")


def container_user(home: Path) -> tuple[int, int]:
    """Who steps and model servers run as: never root.

    ``MLOPS_PACK_CONTAINER_USER`` ("uid:gid") when set, else the owner of the store
    (``MLOPS_PACK_HOME``), with a root-owned store mapped to nobody.
    """
    override = os.environ.get("MLOPS_PACK_CONTAINER_USER")
    if override:
        uid, gid = (int(x) for x in override.split(":"))
        return uid, gid
    stat = home.stat()
    return (NOBODY, NOBODY) if stat.st_uid == 0 else (stat.st_uid, stat.st_gid)


def hand_over(path: Path, uid: int, gid: int, mode: int | None = None) -> None:
    """Give ``path`` to the container user (only root can chown), with ``mode`` if given."""
    if mode is not None:
        path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


@dataclass(frozen=True)
class ContainerLimits:
    """Resource limits for a step container; defaults suit the example models."""

    memory: str = "4g"
    cpus: float = 2.0  # a hard quota (nano_cpus), not a weight
    pids: int = 512
    tmpfs_size: str = "1g"
    # The weight when the host's CPUs are contended (Docker's default is 1024). A step is
    # batch work: at a quarter of the weight it yields to the services beside it on a
    # worker host (the Celery worker handing on the next task, the scheduler, Postgres,
    # the MLflow server, model servers), and takes every cycle they leave idle.
    cpu_shares: int = 256


CPUS_ENV = "MLOPS_PACK_STEP_CPUS"

# Native thread pools (OpenMP, OpenBLAS, MKL) size themselves by the cores the kernel
# shows, and a container sees all of the host's whatever its quota: a one-CPU step on a
# 64-core host would start 64 BLAS threads and spend its quota switching between them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment(limits: ContainerLimits) -> dict[str, str]:
    """The thread-pool sizes of a step held to ``limits``: its CPU quota, rounded up."""
    return dict.fromkeys(THREAD_VARIABLES, str(max(1, math.ceil(limits.cpus))))


def _environment(client, spec: ContainerSpec, image: dict | None = None) -> dict[str, str]:
    """The spec's environment over the thread-pool sizes, less any size the image sets
    itself (a team's image tuned for its own libraries keeps its setting). ``image`` is
    the image's inspection when the caller has it already (one request fewer)."""
    image = image if image is not None else client.inspect_image(spec.image)
    image_env = image.get("Config", {}).get("Env") or []
    in_image = {entry.split("=", 1)[0] for entry in image_env}
    sizes = {k: v for k, v in thread_environment(spec.limits).items() if k not in in_image}
    return {**sizes, **spec.environment}


def default_limits() -> ContainerLimits:
    """The limits of a step whose operator sets none. ``MLOPS_PACK_STEP_CPUS`` in the
    worker's environment sets the CPU quota (a deployment that sizes workers in slots
    gives each step one CPU without subclassing every operator)."""
    from mlops_pack.airflow.exceptions import MlopsBadInputFailure

    raw = os.environ.get(CPUS_ENV, "").strip()
    if not raw:
        return ContainerLimits()
    try:
        cpus = float(raw)
    except ValueError:
        cpus = 0.0
    if not 0 < cpus < 1024:
        raise MlopsBadInputFailure(
            f"{CPUS_ENV}={raw!r} is not a number of CPUs. Fix: set it to a positive number "
            "such as 1 or 0.5, or unset it for the default of 2"
        )
    return ContainerLimits(cpus=cpus)


@dataclass
class ContainerSpec:
    image: str
    command: list[str]
    name: str
    user: str
    mounts: list[Any] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    network_mode: str = "none"
    limits: ContainerLimits = field(default_factory=ContainerLimits)
    timeout_seconds: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None  # the image's own (the step CLI) unless set


def host_config(client, spec: ContainerSpec) -> dict[str, Any]:
    limits = spec.limits
    return client.create_host_config(
        mounts=spec.mounts,
        network_mode=spec.network_mode,
        read_only=True,
        # /tmp inside the container is a private tmpfs, not the host's /tmp.
        tmpfs={"/tmp": f"rw,noexec,nosuid,size={limits.tmpfs_size}"},  # noqa: S108
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        pids_limit=limits.pids,
        mem_limit=limits.memory,
        memswap_limit=limits.memory,
        nano_cpus=int(limits.cpus * 1e9),
        cpu_shares=limits.cpu_shares,
        auto_remove=False,
        privileged=False,
    )


def remove_quietly(client, name_or_id: str, log: logging.Logger) -> None:
    from docker.errors import NotFound

    try:
        # v=True: the anonymous work volume of a no-shared-file-system step goes too.
        client.remove_container(name_or_id, force=True, v=True)
    except NotFound:
        return
    except Exception as exc:  # removal is best effort; a leftover is reported, not fatal
        log.warning("could not remove container %s: %s", name_or_id, exc)


def create(client, spec: ContainerSpec, log: logging.Logger, image: dict | None = None) -> str:
    """Create the hardened container (not started) and return its id; ``image``, the
    image's inspection if the caller made it, saves asking the engine again.

    A container of the same name left by a killed earlier try of this stack is removed
    first, or create would fail with 409; one of another stack (or unlabelled) is left
    alone and the create is refused.
    """
    stack = spec.labels.get(STACK_LABEL)
    owner = owner_of(client, spec.name) if stack else None
    if owner is not None and owner != stack:
        raise AirflowException(
            f"container {spec.name} exists but is not this stack's ({STACK_LABEL}={owner!r}, "
            f"this stack {stack!r}); it was left alone: remove it yourself if it is stale"
        )
    remove_quietly(client, spec.name, log)
    container = client.create_container(
        image=spec.image,
        command=spec.command,
        name=spec.name,
        user=spec.user,
        environment=_environment(client, spec, image),
        working_dir="/work",
        host_config=host_config(client, spec),
        entrypoint=spec.entrypoint,
        labels={LABEL: "true", **spec.labels},
    )
    return container["Id"]


def run(
    client,
    spec: ContainerSpec,
    log: logging.Logger,
    before_start: Callable[[str], None] | None = None,
    after_exit: Callable[[str], None] | None = None,
    image: dict | None = None,
) -> int:
    """Run to completion and return the exit code; the container is always removed.

    ``before_start(id)`` runs on the created container (to copy inputs in) and
    ``after_exit(id)`` on the stopped one (to copy results out), before its removal;
    ``image`` is the image's inspection if the caller made it already.
    """
    container_id = create(client, spec, log, image)
    done = threading.Event()  # ends the log streamer's retries once the run is over
    try:
        if before_start:
            before_start(container_id)
        client.start(container_id)
        streamer = threading.Thread(
            target=_stream_logs, args=(client, container_id, log, done), daemon=True
        )
        streamer.start()
        # docker-py's per-request timeout is not honoured on unix sockets, so the deadline
        # is kept here: wait in a thread, kill the container when time is up.
        status: dict[str, Any] = {}

        def wait_for_exit() -> None:
            try:
                status.update(_exit_status(client, container_id))
            except Exception as exc:  # raised below, in the task's thread
                status["error"] = exc

        waiter = threading.Thread(target=wait_for_exit, daemon=True)
        waiter.start()
        waiter.join(spec.timeout_seconds)
        if waiter.is_alive():
            remove_quietly(client, container_id, log)
            raise AirflowException(
                f"step container {spec.name} did not finish within {spec.timeout_seconds}s; "
                "it was killed and removed"
            )
        if "error" in status:
            raise AirflowException(
                f"step container {spec.name}: waiting for its exit failed ({status['error']}); "
                "it was removed"
            ) from status["error"]
        streamer.join(timeout=5)
        if after_exit:
            after_exit(container_id)
        return int(status.get("StatusCode", 1))
    finally:
        done.set()
        remove_quietly(client, container_id, log)


# A proxy between the worker and the engine (the shipped socket proxy is HAProxy, idle
# timeout 10 minutes) cuts a request that stays silent too long: `wait` is silent until
# the step exits, and `logs --follow` while the step prints nothing. Both are asked again
# after a cut, so a long step outlives any such timeout; an engine (or proxy) that stays
# unreachable for CUT_GRACE_SECONDS ends the wait with its error.
CUT_PAUSE_SECONDS = 1.0
CUT_GRACE_SECONDS = 60.0


def _cut(exc: Exception) -> bool:
    """Whether ``exc`` is a request cut between the worker and the engine (a proxy's
    gateway timeout, a dropped connection), not the engine's own answer."""
    from docker.errors import APIError
    from requests.exceptions import ChunkedEncodingError, ConnectionError, ReadTimeout

    if isinstance(exc, APIError):
        return exc.response is not None and exc.response.status_code in (502, 503, 504)
    return isinstance(exc, ChunkedEncodingError | ConnectionError | ReadTimeout)


def _exit_status(client, container_id: str) -> dict:
    """The engine's answer to ``wait``, asked again after each cut (the engine answers a
    stopped container's at once). Between tries the container is looked up until the
    engine answers again (a restarting proxy), for at most CUT_GRACE_SECONDS; a
    container that is gone, or any other error, ends the wait with that error."""
    import time

    while True:
        try:
            return client.wait(container_id)
        except Exception as exc:
            if not _cut(exc):
                raise
        deadline = time.monotonic() + CUT_GRACE_SECONDS
        while True:
            time.sleep(CUT_PAUSE_SECONDS)
            try:
                client.inspect_container(container_id)
                break
            except Exception as exc:
                if not _cut(exc) or time.monotonic() > deadline:
                    raise


def _stream_logs(client, container_id: str, log: logging.Logger, done: threading.Event) -> None:
    """Copy the container's output into ``log`` line by line until it stops.

    A cut stream can look like its normal end (docker-py reads the frames off the socket),
    so each end is checked against the container: still running, it is followed again
    from the second of the last line logged; stopped, what it printed since is read once
    more. A stream read again repeats, in the same order, the lines already logged from
    that second on: as many are skipped as were logged (counted by second), whatever
    their timestamps' order (a long line's parts share one; stdout and stderr can land
    slightly out of order). Gives up, with a warning, when the run is over or the engine
    stays unreachable for CUT_GRACE_SECONDS."""
    import time

    from docker.errors import NotFound

    logged: dict[int, int] = {}  # lines logged, by their timestamp's second
    last_second: int | None = None
    follow, failing_since = True, None
    while not done.is_set():
        try:
            skip = 0
            if last_second is not None:
                logged = {second: n for second, n in logged.items() if second >= last_second}
                skip = sum(logged.values())
            lines = client.logs(container_id, stream=True, follow=follow, timestamps=True,
                                since=last_second)  # fmt: skip
            for raw in lines:
                failing_since = None
                if skip:
                    skip -= 1  # logged before the stream was read again
                    continue
                stamp, _, text = raw.decode("utf-8", "replace").partition(" ")
                at = _log_time(stamp)
                if at is not None:
                    last_second = at[0]
                if last_second is not None:
                    logged[last_second] = logged.get(last_second, 0) + 1
                log.info("%s", text.rstrip())
            if not follow:
                return
            follow = client.inspect_container(container_id)["State"]["Running"]
            if not follow:
                continue  # read what it printed between the cut and its exit
        except NotFound:
            return  # removed under us: nothing more to show
        except Exception as exc:
            failing_since = failing_since or time.monotonic()
            if not _cut(exc) or time.monotonic() - failing_since > CUT_GRACE_SECONDS:
                log.warning("the step's log stopped being copied here: %s", exc)
                return
        time.sleep(CUT_PAUSE_SECONDS)


def _log_time(stamp: str) -> tuple[int, int] | None:
    """(unix second, nanosecond) of a Docker log line's RFC 3339 timestamp
    (``2026-12-02T21:30:00.123456789Z``; Go drops the fraction's trailing zeros)."""
    from datetime import UTC, datetime

    whole, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        second = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    nanos = int(fraction.ljust(9, "0")[:9]) if fraction.isdigit() else 0
    return int(second.timestamp()), nanos


@dataclass(frozen=True)
class Inbound:
    """A folder or file to copy into a created container, as ``arcname`` under the target.

    ``writable`` gives the container user a folder it may write in (the step's run
    folder); the rest is read-only to it. ``private`` (secrets) leaves only the owner able
    to read: files 0400 in folders 0500.
    """

    source: Path
    arcname: str
    writable: bool = False
    private: bool = False
    skip: tuple[Path, ...] = ()  # folders under ``source`` that are not copied

    def modes(self) -> tuple[int, int]:
        """(folder mode, file mode) inside the container."""
        if self.private:
            return 0o500, 0o400
        return (0o700, 0o600) if self.writable else (0o555, 0o444)

    def paths(self) -> list[Path]:
        """``source`` and, for a folder, every folder and regular file under it (symbolic
        links are followed to files, never into folders), outside ``skip``."""
        if not self.source.is_dir():
            return [self.source]
        skipped = [s.resolve() for s in self.skip]
        found = [self.source]
        for path in sorted(self.source.rglob("*")):
            if any(path.resolve().is_relative_to(s) for s in skipped):
                continue
            if (path.is_dir() and not path.is_symlink()) or path.is_file():
                found.append(path)
        return found


def copy_in(client, container_id: str, into: str, items: list[Inbound], user: str) -> int:
    """Copy ``items`` into the created (not started) container under ``into``, owned by
    ``user`` ("uid:gid"): how a step gets its inputs without a host bind mount. The tar
    is spooled to a temporary file and streamed, so a large data file is never held in
    memory. Returns the bytes of file content copied."""
    import tempfile

    uid, gid = (int(x) for x in user.split(":"))

    def entry(name: PurePosixPath, mode: int, mtime: float = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(str(name))
        info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, int(mtime)
        return info

    copied = 0
    made: set[PurePosixPath] = set()
    with tempfile.TemporaryFile(prefix="mlops-pack-copy-in-") as spool:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            for item in items:
                dir_mode, file_mode = item.modes()
                top = PurePosixPath(item.arcname)
                # The folders above an item, owned by the user too (not left to the engine).
                for parent in [p for p in reversed(top.parents[:-1]) if p not in made]:
                    made.add(parent)
                    folder = entry(parent, 0o555)
                    folder.type = tarfile.DIRTYPE
                    tar.addfile(folder)
                for path in item.paths():
                    stat = path.stat()
                    name = top / path.relative_to(item.source).as_posix()
                    if path.is_dir():
                        folder = entry(name, dir_mode, stat.st_mtime)
                        folder.type = tarfile.DIRTYPE
                        tar.addfile(folder)
                        continue
                    info = entry(name, file_mode, stat.st_mtime)
                    info.size = stat.st_size
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                    copied += stat.st_size
        spool.seek(0)
        client.put_archive(container_id, into, spool)
    return copied


def copy_out(client, container_id: str, path: str, to: Path, limit: int = 16 << 20) -> bool:
    """Copy one regular file out of the stopped container to ``to``; False if it is not
    there. Refuses anything but a regular file, and files over ``limit`` bytes."""
    from docker.errors import NotFound

    try:
        stream, _ = client.get_archive(container_id, path)
    except NotFound:
        return False
    raw = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.next()
        if member is None or not member.isreg() or member.size > limit:
            raise AirflowException(f"step container: {path} is not a regular file under {limit} B")
        handle = tar.extractfile(member)
        tmp = to.with_name(to.name + ".part")
        tmp.write_bytes(handle.read() if handle else b"")
        tmp.replace(to)  # nothing half-written becomes visible
    return True
