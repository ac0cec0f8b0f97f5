"""Operators, one per step, on a shared base that runs the step in a hardened container.

Each step is the same CLI the containers and people run (``python -m mlops_pack``);
the operator fills a fresh work directory, runs the step (in Docker by default, or
in-process with ``runner="inprocess"``), reads ``result.json`` and returns it as XCom.
Exit codes map onto Airflow outcomes: bad input and a moved champion fail without retry;
anything else unexpected raises ``AirflowException`` and is retried.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

from mlops_pack import mlflow_credentials
from mlops_pack.airflow.container import (
    ContainerLimits,
    container_user,
    default_limits,
    hand_over,
)
from mlops_pack.airflow.exceptions import FAILURES, MlopsBadInputFailure
from mlops_pack.airflow.hooks import server_conn_id
from mlops_pack.airflow.links import (
    ComparisonReportLink,
    MlflowRunLink,
    MonitorReportLink,
    ServedVersionLink,
)
from mlops_pack.ca_bundles import SERVER_CA_FILE, SERVER_CA_VARIABLE, server_ca
from mlops_pack.errors import BadInputError
from mlops_pack.iso_time import aware_time
from mlops_pack.settings import store_not_writable, writable_by

STEP_INCLUDE = "/opt/include"
STEP_DATA = "/data"
STEP_WORK = "/work"
STEP_EXTENSIONS = "/opt/extensions"
STEP_SECRETS = "/run/mlops-pack/secrets"
# Without a shared file system: the work dir copied into the container's own volume, and
# a home for the settings on the tmpfs (a remote MLflow keeps nothing in it).
STEP_REMOTE_WORK = "/work/run"
STEP_REMOTE_HOME = "/tmp/mlops-home"  # noqa: S108
LOCK_DSN_FILE = "lock_dsn"
# Files among a step's secrets, and the variable that names each one's copy in the step
# (never the value: docker inspect shows a container's environment). The CA bundles are
# public, but the step can read no file of this host.
_SECRET_FILE_VARIABLES = {
    LOCK_DSN_FILE: "MLOPS_PACK_LOCK_DSN_FILE",
    mlflow_credentials.CREDENTIALS_FILE: mlflow_credentials.FILE_VARIABLE,
    mlflow_credentials.CA_FILE: mlflow_credentials.CA_VARIABLE,  # MLflow's client reads it
    SERVER_CA_FILE: SERVER_CA_VARIABLE,  # the pack's server client reads it
}
# What include/ may hold to be copied into every step (it is specs and suites; data
# belongs under MLOPS_PACK_DATA_DIR).
INCLUDE_COPY_LIMIT = 64 << 20
# The Docker network of the steps that call a model server (operators below).
SERVER_STEP_NETWORK_ENV = "MLOPS_PACK_SERVER_STEP_NETWORK"


@dataclass(frozen=True)
class StepPlaces:
    """Where a step container finds its inputs: bind mounts on the worker's own engine,
    or folders of the container's volume (copied in) without a shared file system."""

    include: str = STEP_INCLUDE
    data: str = STEP_DATA
    work: str = STEP_WORK
    extensions: str = STEP_EXTENSIONS
    secrets: str = STEP_SECRETS
    # Only without a shared file system (the bind-mounted store holds them otherwise).
    logs: str = ""
    labels: str = ""

    @classmethod
    def remote(cls) -> StepPlaces:
        return cls(
            include=f"{STEP_WORK}/include",
            data=f"{STEP_WORK}/data",
            work=STEP_REMOTE_WORK,
            extensions=f"{STEP_WORK}/extensions",
            secrets=f"{STEP_WORK}/secrets",
            logs=f"{STEP_WORK}/feed/logs",
            labels=f"{STEP_WORK}/feed/labels",
        )

    def under_work(self, place: str) -> str:
        """A place as a path relative to the volume's root (an archive name)."""
        return PurePosixPath(place).relative_to(STEP_WORK).as_posix()


def _env_path(name: str, default: Path) -> Path:
    return Path(os.environ.get(name) or default).absolute()


def default_include_dir() -> Path:
    """The folder with the specs (``models/``) and suites (``expectations/``).

    In this order: ``MLOPS_PACK_INCLUDE_DIR`` when set (used as is); ``include/`` beside
    Airflow's dags folder (the layout of Airflow projects); the source checkout's
    ``include/`` when the pack runs from a checkout. An installed wheel has no checkout,
    so a deployment sets the variable or keeps ``include/`` next to ``dags/``.
    """
    explicit = os.environ.get("MLOPS_PACK_INCLUDE_DIR")
    if explicit:
        candidates = [("MLOPS_PACK_INCLUDE_DIR", Path(explicit).absolute())]
    else:
        from airflow.configuration import conf

        dags = Path(conf.get("core", "dags_folder")).expanduser().absolute()
        # plugins/mlops_pack/airflow/operators.py -> the checkout's include/
        checkout = Path(__file__).resolve().parents[3]
        candidates = [("beside the dags folder", dags.parent / "include")]
        if (checkout / "pyproject.toml").is_file():
            candidates.append(("in the source checkout", checkout / "include"))
    for _, folder in candidates:
        if any((folder / "models").glob("*.yaml")):
            return folder
    tried = "; ".join(f"{folder} ({where})" for where, folder in candidates)
    raise MlopsBadInputFailure(
        f"no include dir with model specs (models/*.yaml): tried {tried}. Fix: set "
        "MLOPS_PACK_INCLUDE_DIR to the folder holding models/ and expectations/, or put "
        "them in include/ next to the dags folder (docs/bring-your-own-model.md)"
    )


class MlopsStepOperator(BaseOperator):
    """Run one mlops-pack step for one model.

    :param model: model name; its spec is ``<include>/models/<model>.yaml``.
    :param overrides: run overrides (templated), validated by the step against the spec's bounds.
    :param runner: ``docker`` (default), ``kubernetes`` (a hardened pod, docs/runners.md) or
        ``inprocess`` where no Docker engine is available.
    :param image: task image; default ``$MLOPS_PACK_TASK_IMAGE`` or ``mlops-pack-task:latest``.
    :param limits: memory, CPU quota, pids and tmpfs size of the step container.
    :param network_mode: ``none`` unless the step must reach a service (a remote MLflow).
    :param container_timeout: seconds before the container is killed and removed.
    :param docker_url: Docker engine URL; ``docker_conn_id`` takes precedence when set.
    :param server_conn_id: Airflow Connection of the model's server (host, port, the admin
        token as password, ``prediction_api_key`` in extra); ``auto`` uses
        ``mlops_pack_server_<model>`` when the spec has a ``serving`` section. The secrets
        reach the step as files in a private directory outside the store (see
        ``_private_secrets_dir``), never as arguments or environment, and the step then
        runs on the host network to reach the server on 127.0.0.1.
    """

    step: str = ""
    needs_prediction_key = False  # only the deploy step sends prediction traffic
    reads_data = False  # reads the run's data file (copied in when nothing is shared)
    outputs: tuple[str, ...] = ("result.json",)  # what the worker reads from the work dir
    template_fields: Sequence[str] = (
        *BaseOperator.template_fields,
        "overrides",
        "model",
        "server_conn_id",
    )
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        model: str,
        overrides: dict[str, Any] | str | None = None,
        runner: str | None = None,
        image: str | None = None,
        limits: ContainerLimits | None = None,
        network_mode: str = "none",
        container_timeout: float | None = 3600,
        docker_url: str | None = None,
        docker_conn_id: str | None = None,
        server_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.server_conn_id = server_conn_id
        self.model = model
        self.overrides = overrides
        self.runner = runner
        self.image = image
        self.limits = limits  # None: default_limits() when the step runs
        self.network_mode = network_mode
        self.container_timeout = container_timeout
        self.docker_url = docker_url
        self.docker_conn_id = docker_conn_id
        self._container_name: str | None = None
        self._secrets: Path | None = None
        self._calls_server = False  # set with the server's secrets: its own network
        self._downloads: Path | None = None  # prediction logs fetched from the server
        self._ca_bundle: str | None = None  # for an https MLflow server, read once a task
        # The step's XCom record once it ran; the task's extra links are built from it.
        self.result_record: dict[str, Any] | None = None

    # What subclasses provide ---------------------------------------------------------
    def step_arguments(self, context: Any, work: Path) -> list[str]:
        """Extra CLI arguments; may write input files into ``work`` (seen as /work)."""
        return []

    def xcom_value(self, record: dict[str, Any]) -> dict[str, Any]:
        """What of the step's record goes to XCom (keep it small and secret-free)."""
        return record

    def feed_window(self) -> tuple[datetime, datetime] | None:
        """The [start, end) of served traffic the step reads (monitor, labelled batch):
        a step without a shared file system gets copies of those days' logs and labels."""
        return None

    # Execution -----------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any]:
        runner = self.runner or os.environ.get("MLOPS_PACK_RUNNER", "docker")
        work = self._fresh_work_dir(context)
        argv = [
            self.step,
            "--spec",
            f"{{include}}/models/{self.model}.yaml",
            "--out",
            "{work}",
            "--run-id",
            context["run_id"],
        ]
        overrides = self._overrides()
        if overrides:
            (work / "overrides.json").write_text(json.dumps(overrides), encoding="utf-8")
            argv += ["--overrides", "{work}/overrides.json"]
        argv += self.step_arguments(context, work)
        self._ca_bundle = _worker_bundle(mlflow_credentials.ca_bundle)
        try:
            argv += self._server_arguments()
            if runner == "docker":
                code = self._run_docker(argv, work, context)
            elif runner == "inprocess":
                code = self._run_inprocess(argv, work, context)
            elif runner == "kubernetes":
                code = self._run_kubernetes(argv, work, context)
            else:
                raise MlopsBadInputFailure(
                    f"runner must be 'docker', 'kubernetes' or 'inprocess', got {runner!r}"
                )
        finally:
            for folder in (self._secrets, self._downloads):
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
            self._secrets = self._downloads = self._ca_bundle = None
            self._calls_server = False
        return self._outcome(code, work, context)

    def _server_conn(self) -> str | None:
        conn_id = (self.server_conn_id or "").strip()
        if conn_id != "auto":
            return conn_id or None
        return server_conn_id(self.model) if self._spec().serving is not None else None

    def _server_arguments(self) -> list[str]:
        """Model server URL and secret files for steps that talk to the server."""
        conn_id = self._server_conn()
        if conn_id is None:
            return []
        url, secrets = self._server_secrets(conn_id)
        bundle = _worker_bundle(server_ca) if url.lower().startswith("https://") else None
        if bundle is not None:  # the step verifies the server against its copy
            secrets[SERVER_CA_FILE] = bundle
        self._secrets = _private_secrets_dir()
        uid, gid = container_user(_home())
        for name, value in secrets.items():
            path = self._secrets / name
            path.write_text(value, encoding="utf-8")
            hand_over(path, uid, gid, 0o400)
        hand_over(self._secrets, uid, gid, 0o700)
        self._calls_server = True
        args = ["--server-url", url, "--admin-token-file", "{secrets}/admin_token"]
        if "prediction_key" in secrets:
            args += ["--prediction-key-file", "{secrets}/prediction_key"]
        return args

    def _server_secrets(self, conn_id: str) -> tuple[str, dict[str, str]]:
        """The server's URL and the secrets this step needs, from the Airflow Connection."""
        from mlops_pack.airflow.hooks import ModelServerHook

        access = ModelServerHook(conn_id).access(need_prediction_key=self.needs_prediction_key)
        secrets = {"admin_token": access.admin_token}
        if self.needs_prediction_key and access.prediction_key:
            secrets["prediction_key"] = access.prediction_key
        return access.url, secrets

    def _overrides(self) -> dict[str, Any]:
        raw = self.overrides
        if isinstance(raw, str):
            raw = json.loads(raw) if raw.strip() else {}
        return {k: v for k, v in (raw or {}).items() if v not in (None, "", {})}

    def _fresh_work_dir(self, context: Any) -> Path:
        root = _work_root()
        ti = context["ti"]
        safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        work = root / ti.dag_id / safe_run / f"{ti.task_id}.{ti.try_number}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return work

    def _outcome(self, code: int, work: Path, context: Any) -> dict[str, Any]:
        result_file = work / "result.json"
        if not result_file.exists():
            raise AirflowException(f"step {self.step} exited {code} without writing result.json")
        result = json.loads(result_file.read_text(encoding="utf-8"))
        value = self.xcom_value(result.get("result") or {})
        value["status"] = result["status"]
        self.result_record = value
        status = result["status"]
        if status in ("ok", "rejected"):
            return value
        # Publish what the step found before failing, so the UI shows the reasons.
        context["ti"].xcom_push(key="return_value", value={**value, "error": result.get("error")})
        failure = FAILURES.get(status)
        if failure is not None:
            raise failure(result.get("error") or status, value)
        raise AirflowException(f"step {self.step} failed: {result.get('error')}")

    def _run_inprocess(self, argv: list[str], work: Path, context: Any) -> int:
        from mlops_pack.cli import main

        include = default_include_dir()
        args = _substitute(argv, include=include, work=work, secrets=self._secrets)
        previous = os.environ.get("MLOPS_PACK_DATA_DIR")
        os.environ["MLOPS_PACK_DATA_DIR"] = str(_env_path("MLOPS_PACK_DATA_DIR", include / "data"))
        try:
            return main(args)
        finally:
            if previous is None:
                os.environ.pop("MLOPS_PACK_DATA_DIR", None)
            else:
                os.environ["MLOPS_PACK_DATA_DIR"] = previous

    def _run_docker(self, argv: list[str], work: Path, context: Any) -> int:
        from docker.types import Mount

        from mlops_pack.airflow import container
        from mlops_pack.extensions import extensions_dir

        include = default_include_dir()
        data = _env_path("MLOPS_PACK_DATA_DIR", include / "data")
        home = _home()
        uid, gid = container_user(home)
        # An MLflow server over HTTP: the step shares no file system with this worker.
        remote = _remote_tracking()
        if not remote and not writable_by(home, uid, gid):  # fail early, never retried
            problem = store_not_writable(home, uid, gid, "its owner and mode deny that user")
            raise MlopsBadInputFailure(str(problem), problem.payload)
        user = f"{uid}:{gid}"
        hand_over(work, uid, gid)
        self._worker_secrets(uid, gid)
        places = StepPlaces.remote() if remote else StepPlaces()
        if remote:
            feed = self._feed_folders()
        elif self.feed_window() is not None and _settings().prediction_logs == "server":
            raise MlopsBadInputFailure(
                "MLOPS_PACK_PREDICTION_LOGS=server: the logs are downloaded for steps that "
                "share no file system with the worker (MLFLOW_TRACKING_URI an http(s) "
                "server); with a local MLflow store the step reads MLOPS_PACK_PREDICTION_LOG_DIR."
                " Fix: unset MLOPS_PACK_PREDICTION_LOGS, or use an MLflow server"
            )
        else:
            feed = None
        if feed is not None:
            argv = [*argv, "--log-dir", places.logs, "--labels-dir", places.labels]
        args = _substitute(argv, include=places.include, work=places.work, secrets=places.secrets)
        ti = context["ti"]
        stack = container.stack_id(home)
        self._container_name = re.sub(
            r"[^A-Za-z0-9_.-]",
            "_",
            f"mlops-{stack}-{ti.dag_id}-{ti.task_id}-{context['run_id']}",
        )[:200]
        extensions = extensions_dir()
        if remote:
            # The container's own volume, removed with it: include, the run's data file,
            # extensions, secrets and the work dir are copied in before the start, and
            # result.json out after the exit. Nothing of this worker's file system is
            # named to the engine, which may be on another host.
            mounts = [Mount(STEP_WORK, None, type="volume")]
        else:
            mounts = self._local_mounts(include, data, home, work, extensions)
        spec = container.ContainerSpec(
            image=self.image or os.environ.get("MLOPS_PACK_TASK_IMAGE", "mlops-pack-task:latest"),
            command=args,
            name=self._container_name,
            user=user,
            mounts=mounts,
            environment=self._step_environment(remote, home, places, context, extensions),
            network_mode=self._step_network(remote),
            limits=self.limits or default_limits(),
            timeout_seconds=self.container_timeout,
            labels={
                "io.mlops-pack.model": self.model,
                "io.mlops-pack.run": context["run_id"][:63],
                container.STACK_LABEL: stack,
            },
        )
        client = self._docker_client()
        image = client.inspect_image(spec.image)
        self.log.info("running step %s in %s (%s)", self.step, spec.image, image["Id"])
        context["ti"].xcom_push(key="image_id", value=image["Id"])
        if not remote:
            return container.run(client, spec, self.log, image=image)
        inbound = self._inbound(work, include, data, extensions, feed)

        def copy_in(container_id: str) -> None:
            copied = container.copy_in(client, container_id, STEP_WORK, inbound, user)
            self.log.info("copied %d bytes of inputs into the step container", copied)

        return container.run(
            client,
            spec,
            self.log,
            before_start=copy_in,
            after_exit=lambda cid: [
                container.copy_out(client, cid, f"{STEP_REMOTE_WORK}/{name}", work / name)
                for name in self.outputs
            ],
            image=image,
        )

    def _step_environment(
        self, remote: bool, home: Path, places: StepPlaces, context: Any, extensions: Path | None
    ) -> dict[str, str]:
        environment = {
            # Remote: the settings need a home, but nothing is kept there (tmpfs).
            "MLOPS_PACK_HOME": STEP_REMOTE_HOME if remote else str(home),
            "MLOPS_PACK_DATA_DIR": places.data,
            "MLOPS_PACK_DAG_RUN_ID": context["run_id"],
        }
        # No secret in the environment (docker inspect shows it): the lock DSN and the
        # MLflow server's credentials are files (_worker_secrets).
        passed = ["MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_PACK_EXTENSIONS"]
        if not remote:  # a lock folder of this worker's means nothing in a remote step
            passed.append("MLOPS_PACK_LOCK_DIR")
        for name in passed:
            if os.environ.get(name):
                environment[name] = os.environ[name]
        for name, variable in _SECRET_FILE_VARIABLES.items():
            if self._secrets and (self._secrets / name).exists():
                environment[variable] = f"{places.secrets}/{name}"
        if extensions is not None:  # in-house modules: read-only, importable by the step
            environment["MLOPS_PACK_EXTENSIONS_DIR"] = places.extensions
        return environment

    def _local_mounts(
        self, include: Path, data: Path, home: Path, work: Path, extensions: Path | None
    ) -> list:
        """Bind mounts for the embedded default, where the engine shares this host."""
        from docker.types import Mount

        mounts = [
            Mount(STEP_INCLUDE, str(include), type="bind", read_only=True),
            Mount(STEP_DATA, str(data), type="bind", read_only=True),
            # The store is mounted at its host path so recorded artifact URIs resolve.
            Mount(str(home), str(home), type="bind", read_only=False),
            Mount(STEP_WORK, str(work), type="bind", read_only=False),
        ]
        if extensions is not None:
            mounts.append(Mount(STEP_EXTENSIONS, str(extensions), type="bind", read_only=True))
        if self._secrets:  # only this container sees them: not under the store, read-only
            mounts.append(Mount(STEP_SECRETS, str(self._secrets), type="bind", read_only=True))
        return mounts

    def _worker_secrets(self, uid: int, gid: int) -> None:
        """What of this worker's secrets the step needs, as files among the step's
        secrets, never in the container's environment: the promotion lock's DSN (it may
        hold a password) and the MLflow server's credentials, when either is set; with
        them the CA bundle the server's certificate is checked against (not a secret,
        but the step can read no file of this host)."""
        wanted = {
            LOCK_DSN_FILE: os.environ.get("MLOPS_PACK_LOCK_DSN", "").strip() or None,
            mlflow_credentials.CREDENTIALS_FILE: mlflow_credentials.render(os.environ),
            mlflow_credentials.CA_FILE: self._ca_bundle,
        }
        for name, text in wanted.items():
            if text is None:
                continue
            if self._secrets is None:
                self._secrets = _private_secrets_dir()
            path = self._secrets / name
            path.write_text(text, encoding="utf-8")
            hand_over(path, uid, gid, 0o400)
        if self._secrets is not None:
            hand_over(self._secrets, uid, gid, 0o700)

    def _inbound(
        self,
        work: Path,
        include: Path,
        data: Path,
        extensions: Path | None,
        feed: tuple[list[Path], list[Path]] | None,
    ) -> list:
        """What a step without a shared file system gets copied into its volume."""
        from mlops_pack.airflow.container import Inbound

        places = StepPlaces.remote()
        items = [
            Inbound(work, places.under_work(places.work), writable=True),
            Inbound(include, places.under_work(places.include), skip=(data,)),
        ]
        size = sum(p.stat().st_size for p in items[1].paths() if p.is_file())
        if size > INCLUDE_COPY_LIMIT:
            raise MlopsBadInputFailure(
                f"MLOPS_PACK_INCLUDE_DIR={include} holds {size / 2**20:.0f} MiB, copied into "
                f"every step container without a shared file system (limit "
                f"{INCLUDE_COPY_LIMIT >> 20} MiB). Fix: keep data files out of include/ "
                "(MLOPS_PACK_DATA_DIR names their folder)"
            )
        data_file = self._run_data_file(include, data)
        if data_file is not None:
            relative = data_file.resolve().relative_to(data.resolve()).as_posix()
            items.append(Inbound(data_file, f"{places.under_work(places.data)}/{relative}"))
        if extensions is not None:
            items.append(Inbound(extensions, places.under_work(places.extensions)))
        if self._secrets is not None:
            items.append(Inbound(self._secrets, places.under_work(places.secrets), private=True))
        if feed is not None:
            logs, labels = feed
            for folders, place in ((logs, places.logs), (labels, places.labels)):
                items += [Inbound(f, f"{places.under_work(place)}/{f.name}") for f in folders]
        return items

    def _feed_folders(self) -> tuple[list[Path], list[Path]] | None:
        """The day folders of prediction logs and of labels the step's window reads, on
        this worker, found as the step finds them (spec, then environment); the logs
        downloaded from the model's server instead with MLOPS_PACK_PREDICTION_LOGS=server."""
        window = self.feed_window()
        if window is None:
            return None
        from mlops_pack.feed_layout import label_partitions, log_partitions

        start, end = window
        policy = self._spec().monitoring_policy()
        settings = _settings()
        labels_dir = settings.labels_dir(self.model, policy.labels_dir)
        labels = label_partitions(labels_dir, start.date())
        if settings.prediction_logs == "server":
            return self._served_logs(start, end), labels
        log_dir = settings.prediction_log_dir(self.model, policy.log_dir)
        return log_partitions(log_dir, start, end), labels

    def _served_logs(self, start: datetime, end: datetime) -> list[Path]:
        """The window's days of prediction logs from the model's server (its Connection's
        admin token): what this worker's cache of that server's logs lacks is downloaded,
        and the window is linked into a folder of this task's, removed after the step."""
        import hashlib
        import tempfile

        from mlops_pack.airflow.hooks import ModelServerHook
        from mlops_pack.served_logs import download_window, prune_idle
        from mlops_pack.server_client import ServerClient

        access = ModelServerHook(server_conn_id(self.model)).access()
        root = _work_root()
        root.mkdir(parents=True, exist_ok=True)
        _sweep_left_windows(root)
        # One cache per server: another server's files may share a part file's name.
        server = hashlib.sha256(access.url.encode()).hexdigest()[:16]
        caches = root / "served-logs-cache"
        cache = caches / self.model / server
        self._downloads = Path(tempfile.mkdtemp(prefix=WINDOW_PREFIX, dir=root))
        try:
            got = download_window(
                ServerClient(access.url, access.admin_token), start, end, self._downloads, cache
            )
        # A wrong token or window, or an unusable MLOPS_PACK_SERVER_CA: not retried.
        except BadInputError as refused:
            raise MlopsBadInputFailure(str(refused), refused.payload) from None
        for day in prune_idle(caches):
            self.log.info("removed %s from this worker's cache of prediction logs", day)
        self.log.info(
            "downloaded %d bytes of prediction logs (%d days; %d bytes already in this "
            "worker's cache) from %s",
            got.fetched,
            len(got.folders),
            got.cached,
            access.url,
        )
        return got.folders

    def _spec(self):
        from mlops_pack.spec import load_spec

        return load_spec(default_include_dir() / "models" / f"{self.model}.yaml")

    def _run_data_file(self, include: Path, data: Path) -> Path | None:
        """The data file this step reads (validate, train), checked as the step checks it;
        None for steps that read none and for a retained batch (fetched from MLflow)."""
        if not self.reads_data:
            return None
        from mlops_pack.data_files import DataProblem, resolve_data_file

        overrides = self._overrides()
        if overrides.get("data_sha256"):
            return None
        relative = overrides.get("data_path") or self._spec().data.path
        if Path(relative).is_absolute():
            raise MlopsBadInputFailure(
                f"data_path {relative} is absolute: a step without a shared file system gets "
                "a copy of the run's file, named relative to MLOPS_PACK_DATA_DIR. Fix: give "
                f"the path relative to {data}"
            )
        try:
            path = resolve_data_file(data, str(relative))
        except DataProblem as problem:
            raise MlopsBadInputFailure(
                f"{problem}. Without a shared file system the step gets a copy of the run's "
                f"file, which must be under MLOPS_PACK_DATA_DIR={data}"
            ) from problem
        return path

    def _step_network(self, remote: bool) -> str:
        """``none`` unless the step must reach a service. Without a shared file system it
        must reach the MLflow server: on ``MLOPS_PACK_STEP_NETWORK`` (a Docker network
        that reaches MLflow and, with ``MLOPS_PACK_LOCK_DSN``, the lock's Postgres, and
        nothing else), which has to be named when this operator's is none.
        A step that calls a model server joins ``MLOPS_PACK_SERVER_STEP_NETWORK``."""
        if self._calls_server:
            return _server_step_network(remote)
        if not remote or self.network_mode != "none":
            return self.network_mode
        network = os.environ.get("MLOPS_PACK_STEP_NETWORK", "").strip()
        if not network:
            raise MlopsBadInputFailure(
                f"MLFLOW_TRACKING_URI={os.environ.get('MLFLOW_TRACKING_URI')} is a server, so "
                "step containers must reach it, but MLOPS_PACK_STEP_NETWORK is not set. Fix: "
                "set it to a Docker network that reaches the MLflow server (and the promotion "
                "lock's Postgres, when MLOPS_PACK_LOCK_DSN is set) and nothing else (in "
                "docker-compose, the steps' network), or to 'host' on a single machine"
            )
        return network

    def step_pod(self, argv: list[str], work: Path, context: Any):
        """The hardened pod operator for this step (``runner="kubernetes"``)."""
        from mlops_pack.airflow.kubernetes import POD_WORK, step_pod_operator

        if self._secrets is not None:
            raise MlopsBadInputFailure(
                f"step {self.step}: the kubernetes runner cannot hand the model server's "
                "secrets to a pod yet; run the server steps (deploy, promote, rollback of "
                "a served model) with runner='docker'"
            )
        inputs = {p.name: p.read_text(encoding="utf-8") for p in work.iterdir() if p.is_file()}
        return step_pod_operator(
            task_id=f"{self.task_id}-pod",
            image=self.image or os.environ.get("MLOPS_PACK_TASK_IMAGE", "mlops-pack-task:latest"),
            arguments=_substitute(argv, include=STEP_INCLUDE, work=POD_WORK, secrets=""),
            inputs=inputs,
            limits=self.limits or default_limits(),
            labels={"io.mlops-pack.model": self.model, "io.mlops-pack.step": self.step},
            timeout_seconds=self.container_timeout,
            ca_bundle=self._ca_bundle,
        )

    def _run_kubernetes(self, argv: list[str], work: Path, context: Any) -> int:
        from mlops_pack.airflow.kubernetes import run_step_pod

        record = run_step_pod(self.step_pod(argv, work, context), context)
        if record is None:
            return 1  # no result: _outcome reports it (retried)
        (work / "result.json").write_text(json.dumps(record), encoding="utf-8")
        return 0

    def _docker_client(self):
        from airflow.providers.docker.hooks.docker import DockerHook

        url = self.docker_url or os.environ.get(
            "MLOPS_PACK_DOCKER_URL", "unix://var/run/docker.sock"
        )
        return DockerHook(docker_conn_id=self.docker_conn_id, base_url=url, timeout=60).api_client

    def on_kill(self) -> None:
        if self._container_name:
            from mlops_pack.airflow.container import remove_quietly

            remove_quietly(self._docker_client(), self._container_name, self.log)


def _when(text: str, name: str) -> datetime:
    """The step's own parse, checked before a container starts; not retried."""
    try:
        return aware_time(text, name)
    except BadInputError as problem:
        raise MlopsBadInputFailure(str(problem), problem.payload) from None


def _worker_bundle(read: Callable[[], str | None]) -> str | None:
    """A CA bundle of this worker's (``read``: the MLflow server's, when the task begins;
    the model servers', for a step that calls one): one that cannot be used fails the
    task at once, whatever the runner (in a step it would be a TLS error on the first
    request, retried)."""
    try:
        return read()
    except BadInputError as problem:
        raise MlopsBadInputFailure(str(problem), problem.payload) from None


def _settings():
    """The worker's settings; one it cannot use (a misspelt choice) fails the task at once."""
    from mlops_pack.settings import Settings

    try:
        return Settings.from_env()
    except BadInputError as problem:
        raise MlopsBadInputFailure(str(problem), problem.payload) from None


def _server_step_network(remote: bool) -> str:
    """The Docker network of a step that calls a model server (deploy, promote,
    rollback): ``MLOPS_PACK_SERVER_STEP_NETWORK``, which must reach the servers, the
    MLflow server and the promotion lock's Postgres (docker-compose.yaml: its
    server-steps network). Unset, the
    embedded default's ``host`` (its servers listen on the host's 127.0.0.1); with an
    MLflow server it must be named: the servers are then services on a network of their
    own, which a host-network step cannot resolve."""
    network = os.environ.get(SERVER_STEP_NETWORK_ENV, "").strip()
    if network:
        return network
    if remote:
        raise MlopsBadInputFailure(
            f"MLFLOW_TRACKING_URI={os.environ.get('MLFLOW_TRACKING_URI')} is a server, and this "
            f"step calls a model server, but {SERVER_STEP_NETWORK_ENV} is not set. Fix: set it "
            "to a Docker network that reaches the model servers, MLflow and the promotion "
            "lock's Postgres (in docker-compose.yaml, the server-steps network), or to "
            "'host' on a single machine whose servers listen on 127.0.0.1"
        )
    return "host"


def _remote_tracking() -> bool:
    return _settings().remote_tracking


WINDOW_PREFIX = "served-window-"
# A step's window of served logs is copied into its container before the step starts,
# and removed when the task ends; one a killed task left behind is removed after this
# long (its hard links would make the cache copy the files it shares on every update).
LEFT_WINDOW_SECONDS = 86400


def _sweep_left_windows(root: Path) -> None:
    import time

    oldest = time.time() - LEFT_WINDOW_SECONDS
    for folder in root.glob(f"{WINDOW_PREFIX}*"):
        if folder.is_dir() and folder.stat().st_mtime < oldest:
            shutil.rmtree(folder, ignore_errors=True)


def _work_root() -> Path:
    return _env_path("MLOPS_PACK_WORK_ROOT", _env_path("MLOPS_PACK_HOME", Path(".mlops")) / "work")


def _substitute(argv: list[str], **places: Any) -> list[str]:
    """Fill ``{include}``, ``{work}`` and ``{secrets}`` with paths as the step sees them."""
    out = []
    for arg in argv:
        filled = arg
        for name, value in places.items():
            filled = filled.replace(f"{{{name}}}", str(value))
        out.append(filled)
    return out


def _private_secrets_dir() -> Path:
    """A fresh directory for one step's secrets, outside the store and the work root.

    Every step container mounts the store (and the work root under it) read-write as the
    same user, so a secret written there could be read by any step running at the same
    time. This directory is bind-mounted read-only into the one container that needs it
    (or read in-process) and removed when the step ends. It lives in memory (/dev/shm)
    where the host has it, so the secrets never reach a disk; ``MLOPS_PACK_SECRETS_ROOT``
    chooses another parent.
    """
    import tempfile

    root = os.environ.get("MLOPS_PACK_SECRETS_ROOT") or (
        "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # noqa: S108
    )
    path = Path(tempfile.mkdtemp(prefix="mlops-pack-secrets-", dir=root)).resolve()
    for shared in (_home().resolve(), _work_root().resolve()):
        if path.is_relative_to(shared):
            path.rmdir()
            raise MlopsBadInputFailure(
                f"MLOPS_PACK_SECRETS_ROOT={root}: secrets would be written under {shared}, "
                "which every step container mounts; choose a directory outside it"
            )
    return path


def _home() -> Path:
    """The store (``MLOPS_PACK_HOME``), created if missing: containers mount it."""
    home = _env_path("MLOPS_PACK_HOME", Path(".mlops"))
    home.mkdir(parents=True, exist_ok=True)
    return home


class ValidateDataOperator(MlopsStepOperator):
    """Validate the run's data batch (GX suite plus spec-derived checks)."""

    step = "validate"
    reads_data = True

    def xcom_value(self, record: dict[str, Any]) -> dict[str, Any]:
        keep = ("status", "file", "rows", "data_sha256", "errors", "warnings", "mlflow_run_id")
        return {k: record.get(k) for k in keep}


class TrainModelOperator(MlopsStepOperator):
    """Train the challenger on the validated batch and register it."""

    step = "train"
    reads_data = True
    operator_extra_links = (MlflowRunLink(),)


class EvaluateChallengerOperator(MlopsStepOperator):
    """Score challenger and champion on the challenger's holdout in one pass."""

    step = "evaluate"
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "challenger_version")

    def __init__(self, *, challenger_version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.challenger_version = challenger_version

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return ["--challenger", str(self.challenger_version)]

    def xcom_value(self, record: dict[str, Any]) -> dict[str, Any]:
        # The bootstrap samples and curves stay in the artifact store; XCom gets the summary.
        value = {k: v for k, v in record.items() if k not in ("deltas", "slices", "curves")}
        value["deltas"] = {d["metric"]: d["improvement"] for d in record.get("deltas", [])}
        return value


class GateOperator(MlopsStepOperator):
    """Apply the gate policy; a rejection is a normal, green outcome."""

    step = "gate"
    operator_extra_links = (ComparisonReportLink(),)
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "evaluation_uri")

    def __init__(self, *, evaluation_uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evaluation_uri = evaluation_uri

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return ["--evaluation", str(self.evaluation_uri)]

    def xcom_value(self, record: dict[str, Any]) -> dict[str, Any]:
        # The verdict and its reason lead, the checks follow, then the hashes and policy:
        # the record on file is sorted by key, which buried the verdict at the bottom.
        # (The step's own output, already in this task's log, prints the table once.)
        lead = ("verdict", "summary", "checks", "challenger_version", "champion_version")
        return {
            **{k: record[k] for k in lead if k in record},
            **{k: v for k, v in record.items() if k not in lead},
        }


class DeployModelOperator(MlopsStepOperator):
    """Load the challenger into the server's candidate slot, smoke-test it, run the canary.

    A failed check rolls the candidate back and fails the task without retry; the
    switch itself (candidate to stable, and the alias) is the promote task's job. The
    step puts the server back in its safe state (no canary traffic, no candidate) on
    every exit it lives to see, SIGTERM included; when the step could not (its container
    was killed, timed out or ran out of memory, or the task is killed), this operator
    does it from the worker.

    :param smoke_sample_uri: the evaluate step's ``smoke_sample_uri`` (rows and offline
        scores of this challenger), templated.
    """

    step = "deploy"
    needs_prediction_key = True
    operator_extra_links = (ServedVersionLink(),)
    template_fields: Sequence[str] = (
        *MlopsStepOperator.template_fields,
        "challenger_version",
        "smoke_sample_uri",
    )

    def __init__(self, *, challenger_version: str, smoke_sample_uri: str, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)  # a half-run canary is for a human to look at
        super().__init__(**kwargs)
        self.challenger_version = challenger_version
        self.smoke_sample_uri = smoke_sample_uri

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return [
            "--challenger",
            str(self.challenger_version),
            "--smoke-sample",
            str(self.smoke_sample_uri),
        ]

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            return super().execute(context)
        except BaseException:
            self._safe_state()
            raise

    def on_kill(self) -> None:
        super().on_kill()
        self._safe_state()

    def _safe_state(self) -> None:
        """Canary traffic off and the candidate dropped, from the worker (best effort)."""
        from mlops_pack.errors import MlopsPackError
        from mlops_pack.server_client import ServerClient

        conn_id = self._server_conn()
        if conn_id is None:
            return
        try:
            url, secrets = self._server_secrets(conn_id)
            ServerClient(url, secrets["admin_token"], timeout=10).ok("DELETE", "/admin/candidate")
        except (MlopsPackError, AirflowException) as exc:
            self.log.warning("could not drop the candidate on %s: %s", conn_id, exc)
        else:
            self.log.info("model server %s: canary traffic off, candidate dropped", conn_id)


class PromoteModelOperator(MlopsStepOperator):
    """Move ``champion`` to the challenger by compare-and-set (a retry is a no-op)."""

    step = "promote"
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "decision", "approver")

    def __init__(
        self, *, decision: dict[str, Any] | str, approver: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.decision = decision
        self.approver = approver

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        decision = self.decision if isinstance(self.decision, dict) else json.loads(self.decision)
        decision = {k: v for k, v in decision.items() if k != "status"}
        (work / "decision.json").write_text(json.dumps(decision), encoding="utf-8")
        args = ["--decision", "{work}/decision.json"]
        if self.approver:
            args += ["--approved-by", str(self.approver)]
        return args


class RollbackModelOperator(MlopsStepOperator):
    """Move ``champion`` back to ``previous`` (or a named version), with a recorded reason."""

    step = "rollback"
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "to_version", "reason")

    def __init__(self, *, reason: str, to_version: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
        self.to_version = to_version

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        args = ["--reason", str(self.reason)]
        if self.to_version:
            args += ["--to-version", str(self.to_version)]
        return args


def json_input(work: Path, name: str, value: dict[str, Any] | str, **changes: Any) -> str:
    """Write an upstream task's XCom (with ``changes``) into the work dir; the step's path."""
    data = value if isinstance(value, dict) else json.loads(value)
    # Times arrive as datetimes in some XComs (a HITL answer); the step reads ISO text.
    text = json.dumps({**data, **changes}, default=str)
    (work / f"{name}.json").write_text(text, encoding="utf-8")
    return f"{{work}}/{name}.json"


class LabelledBatchOperator(MlopsStepOperator):
    """Build the retrain's batch from the monitor's window: served rows and their labels.

    Runs only in a run started by the monitor's retrain Asset event (its ``extra`` names
    the window); any other run (cron, a person, REST) trains on the spec's data and this
    task only passes the overrides on. The XCom's ``overrides`` are what the later steps
    use: the run's own, plus the labelled batch's sha256 when one was built.
    """

    step = "labelled-batch"
    _window: dict[str, str] | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        from mlops_pack.retrain_loop import monitor_event_extra

        overrides = self._overrides()
        extra = monitor_event_extra(context.get("triggering_asset_events")) or {}
        window = extra.get("window") or {}
        if overrides.get("data_path") or not (window.get("start") and window.get("end")):
            self.log.info("no monitor window to train on: the run's data is used")
            return {"data_sha256": None, "overrides": overrides}
        self._window = {"start": str(window["start"]), "end": str(window["end"])}
        record = super().execute(context)
        return {**record, "overrides": {**overrides, "data_sha256": record["data_sha256"]}}

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        window = self._window or {}
        return ["--start", window["start"], "--end", window["end"]]

    def feed_window(self) -> tuple[datetime, datetime] | None:
        if not self._window:
            return None
        return _when(self._window["start"], "--start"), _when(self._window["end"], "--end")

    def xcom_value(self, record: dict[str, Any]) -> dict[str, Any]:
        keep = ("data_sha256", "window", "rows", "served_rows", "classes", "event_id")
        return {k: record.get(k) for k in keep}


class MonitorOperator(MlopsStepOperator):
    """Judge a window of the served model's predictions (and the labels that arrived).

    An alarm is a normal outcome: the task stays green and its XCom (the monitor's
    record, without the per-feature detail, which stays in the step's files) says which.

    :param window_end: the window's end (templated; default the run's data interval end).
    """

    step = "monitor"
    outputs = ("result.json", "metrics.prom")
    operator_extra_links = (MonitorReportLink(),)
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "window_end")
    # What the decision after the monitor needs, and the event whose report the link opens;
    # the rest stays in result.json and the report.
    xcom_keys = (
        "status",
        "alarms",
        "window",
        "model",
        "champion_version",
        "performance",
        "event_id",
    )

    def __init__(self, *, window_end: str = "{{ data_interval_end }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_end = window_end

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return ["--end", str(self.window_end)] if self.window_end else []

    def feed_window(self) -> tuple[datetime, datetime]:
        from mlops_pack.feed_layout import window

        end = _when(str(self.window_end), "--end") if self.window_end else None
        return window(end, self._spec().monitoring_policy().window_hours)

    def _outcome(self, code: int, work: Path, context: Any) -> dict[str, Any]:
        result_file = work / "result.json"
        record = json.loads(result_file.read_text(encoding="utf-8")) if result_file.exists() else {}
        if code != 0 or "result" in record:  # a failed step: the usual outcome rules
            return super()._outcome(code, work, context)
        # The step's result.json is the monitor record itself (its status is the verdict).
        self.result_record = {k: record.get(k) for k in self.xcom_keys}
        self.result_record["metrics_pushed"] = self._push_metrics(work / "metrics.prom")
        return self.result_record

    def _push_metrics(self, path: Path) -> bool | None:
        """The window's metrics to the Pushgateway (``MLOPS_PACK_PUSHGATEWAY_URL``), for
        the dashboards; None when none is set. A failed push is a warning, not a failed
        task: the verdict is recorded, and retrying the task would judge the window
        again. The dashboards show the age of the newest push."""
        from mlops_pack.errors import ServiceUnavailableError
        from mlops_pack.metrics_push import credentials_from_env, push

        gateway = os.environ.get("MLOPS_PACK_PUSHGATEWAY_URL", "").strip()
        if not gateway:
            return None
        if not path.is_file():
            self.log.warning("the monitor step wrote no %s: nothing pushed", path.name)
            return False
        try:
            push(gateway, self.model, path.read_bytes(), credentials=credentials_from_env())
        except ServiceUnavailableError as exc:
            self.log.warning("monitor metrics not pushed: %s", exc)
            return False
        self.log.info("monitor metrics pushed to %s", gateway)
        return True


class DecideRetrainOperator(MlopsStepOperator):
    """Trigger, hold or escalate a retrain from the monitor's record and the history.

    :param monitor: the monitor task's XCom (templated).
    """

    step = "decide-retrain"
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "monitor")

    def __init__(self, *, monitor: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.monitor = monitor

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return ["--monitor", json_input(work, "monitor", self.monitor)]


class RecordEscalationOperator(MlopsStepOperator):
    """Record a person's answer to an escalation (every option, the timeout default too).

    :param response: the escalation task's XCom; :param loop: the decide task's XCom.
    """

    step = "record-escalation"
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "response", "loop")

    def __init__(
        self, *, response: dict[str, Any] | str, loop: dict[str, Any] | str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.response = response
        self.loop = loop

    def step_arguments(self, context: Any, work: Path) -> list[str]:
        return [
            "--response",
            json_input(work, "response", self.response),
            "--loop",
            json_input(work, "loop", self.loop),
        ]
