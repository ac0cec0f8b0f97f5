"""Deployment paths and endpoints, from the environment with embedded defaults.

The embedded default keeps everything under one folder (``MLOPS_PACK_HOME``, default
``.mlops`` in the working directory): an MLflow SQLite store, its artifact folder and the
promotion locks. Any MLflow tracking URI works instead via ``MLFLOW_TRACKING_URI``.

Data is read only from under ``MLOPS_PACK_DATA_DIR`` (default ``include/data``) and the
directories listed in ``MLOPS_PACK_DATA_ROOTS`` (separated by ``os.pathsep``): a run's
data path comes from a trigger form or REST call, and must not reach arbitrary files.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlops_pack.errors import BadInputError

# What the embedded default writes under the store, besides new files in it.
STORE_ENTRIES = ("mlflow.db", "mlartifacts", "locks")


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    lock_dir: Path
    data_dir: Path | None
    data_roots: tuple[Path, ...] = ()
    # A Postgres DSN for the promotion lock shared by every host (see promotion_lock).
    lock_dsn: str | None = None
    lock_dir_set: bool = False  # MLOPS_PACK_LOCK_DIR named explicitly (shared storage)

    prediction_log_root: Path | None = None
    labels_root: Path | None = None
    # Where a worker gets the served models' prediction logs: "files" (the folders under
    # MLOPS_PACK_PREDICTION_LOG_DIR, on the servers' host) or "server" (downloaded from
    # each model's server: a worker on any host).
    prediction_logs: str = "files"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("MLOPS_PACK_HOME", ".mlops")).absolute()
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        data_dir = env.get("MLOPS_PACK_DATA_DIR")
        return cls(
            home=home,
            tracking_uri=tracking,
            registry_uri=env.get("MLFLOW_REGISTRY_URI") or tracking,
            artifact_root=env.get("MLOPS_PACK_ARTIFACT_ROOT") or (home / "mlartifacts").as_uri(),
            # The file lock of the embedded default (one host); with several hosts set
            # MLOPS_PACK_LOCK_DSN instead and the lock is a Postgres advisory lock.
            lock_dir=Path(env.get("MLOPS_PACK_LOCK_DIR", home / "locks")),
            lock_dsn=_lock_dsn(env),
            lock_dir_set=bool(env.get("MLOPS_PACK_LOCK_DIR")),
            data_dir=Path(data_dir) if data_dir else None,
            data_roots=tuple(
                Path(root).absolute()
                for root in env.get("MLOPS_PACK_DATA_ROOTS", "").split(os.pathsep)
                if root.strip()
            ),
            prediction_log_root=_path(env.get("MLOPS_PACK_PREDICTION_LOG_DIR")),
            labels_root=_path(env.get("MLOPS_PACK_LABELS_DIR")),
            prediction_logs=_choice(env, "MLOPS_PACK_PREDICTION_LOGS", ("files", "server")),
        )

    @property
    def remote_tracking(self) -> bool:
        """An MLflow server reached over HTTP: nothing is shared through the file system."""
        return self.tracking_uri.startswith(("http://", "https://"))

    def prediction_log_dir(self, model: str, configured: str | None = None) -> Path:
        """Where the model server writes ``model``'s prediction logs and the monitor reads."""
        if configured:
            return Path(configured)
        if self.prediction_log_root:
            return self.prediction_log_root / model
        return self.home / "serving" / model / "predictions"  # where make up's servers write

    def labels_dir(self, model: str, configured: str | None = None) -> Path:
        """Where ground truth for ``model``'s served predictions arrives (the label feed)."""
        if configured:
            return Path(configured)
        return (self.labels_root or self.home / "labels") / model

    def check_store_writable(self) -> None:
        """Refuse at once a store this process cannot write (before MLflow opens it).

        SQLite on an unwritable folder fails only after MLflow's and Airflow's retries
        (minutes) with "unable to open database file", which names neither the folder nor
        the user. A real write is the only reliable test (ACLs, read-only mounts).
        """
        home = self.home
        try:
            home.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=home):
                pass
        except OSError as exc:
            raise store_not_writable(home, os.geteuid(), os.getegid(), exc.strerror) from None
        for name in STORE_ENTRIES:
            entry = home / name
            if entry.exists() and not os.access(entry, os.W_OK):
                raise store_not_writable(
                    home, os.geteuid(), os.getegid(), f"{name} is not writable"
                )


def _lock_dsn(env: dict[str, str]) -> str | None:
    """``MLOPS_PACK_LOCK_DSN``, or the file ``MLOPS_PACK_LOCK_DSN_FILE`` names: how a step
    container gets it, since a container's environment is shown by ``docker inspect``."""
    if env.get("MLOPS_PACK_LOCK_DSN"):
        return env["MLOPS_PACK_LOCK_DSN"]
    named = env.get("MLOPS_PACK_LOCK_DSN_FILE")
    if not named:
        return None
    try:
        return Path(named).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise BadInputError(
            f"MLOPS_PACK_LOCK_DSN_FILE={named}: cannot read it ({exc.strerror}). Fix: name "
            "a readable file holding the promotion lock's Postgres DSN, or unset it",
            {"rule": "lock_dsn_file"},
        ) from exc


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    """``name``'s value, one of ``choices`` (the first when unset)."""
    value = env.get(name, "").strip() or choices[0]
    if value not in choices:
        raise BadInputError(
            f"{name}={value!r}: expected one of {list(choices)}. Fix: set it to one of them "
            "or unset it",
            {"rule": "setting", "field": name},
        )
    return value


def _path(value: str | None) -> Path | None:
    return Path(value).absolute() if value else None


def store_not_writable(home: Path, uid: int, gid: int, reason: str) -> BadInputError:
    """The one message for an unwritable store, from the step or from the operator."""
    return BadInputError(
        f"MLOPS_PACK_HOME {home}: not writable by uid {uid} (gid {gid}): {reason}. Step "
        "containers run as the store's owner (a root-owned store maps to 65534, nobody) "
        f"or as MLOPS_PACK_CONTAINER_USER. Fix: chown -R {uid}:{gid} {home}, or set "
        "MLOPS_PACK_CONTAINER_USER=uid:gid of a user who can write it",
        {"rule": "store_writable", "directory": str(home), "uid": uid, "gid": gid},
    )


def writable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid:gid`` (no supplementary groups, as in a step container) may create
    files in ``path``, judged from its mode bits; a folder with an ACL is given the
    benefit of the doubt, as the step checks again with a real write."""
    if uid == 0:
        return True
    info = path.stat()
    if "system.posix_acl_access" in _xattrs(path):
        return True
    if info.st_uid == uid:
        needed = stat.S_IWUSR | stat.S_IXUSR
    elif info.st_gid == gid:
        needed = stat.S_IWGRP | stat.S_IXGRP
    else:
        needed = stat.S_IWOTH | stat.S_IXOTH
    return info.st_mode & needed == needed


def _xattrs(path: Path) -> list[str]:
    try:
        return os.listxattr(path)
    except OSError:  # no xattr support on this file system: no ACLs either
        return []
