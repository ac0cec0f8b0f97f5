"""The Kubernetes runner: one step in a hardened pod, through the cncf.kubernetes
provider's ``KubernetesPodOperator``, its result returned by the operator's XCom sidecar.

The hardening matches the Docker runner's: a non-root user, a read-only root file system
with an in-memory ``/tmp``, every capability dropped, no privilege escalation, the
runtime's default seccomp profile, CPU and memory limits, no service-account token, and
no host path. Pods share no file system with the worker: the step reaches the MLflow
server over HTTP, its input files travel in the pod spec (``pod_entry``), its result in
XCom. Secrets (the lock's DSN, MLflow credentials) come from a Kubernetes Secret named
by ``MLOPS_PACK_K8S_SECRET``, never from the pod spec; the CA bundle of an https MLflow
server (``MLFLOW_TRACKING_SERVER_CERT_PATH`` on the worker) is public and travels with
the inputs. Untested against a live cluster
(docs/runners.md).
"""

from __future__ import annotations

import json
import os
from typing import Any

from mlops_pack import mlflow_credentials
from mlops_pack.airflow.container import ContainerLimits, thread_environment
from mlops_pack.airflow.exceptions import MlopsBadInputFailure

POD_WORK = "/work/run"
POD_HOME = "/tmp/mlops-home"  # noqa: S108
POD_DATA = "/data"
POD_USER = 65534
# Passed to the pod as plain environment: never secrets (those come from the Secret).
PLAIN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_PACK_EXTENSIONS")


def _quantity(size: str) -> str:
    """Docker's ``4g`` as Kubernetes' ``4Gi``."""
    units = {"k": "Ki", "m": "Mi", "g": "Gi"}
    last = size[-1].lower()
    return size[:-1] + units[last] if last in units else size


def step_pod_operator(
    *,
    task_id: str,
    image: str,
    arguments: list[str],
    inputs: dict[str, str],
    limits: ContainerLimits,
    labels: dict[str, str],
    timeout_seconds: float | None,
    env: dict[str, str] | None = None,
    ca_bundle: str | None = None,
):
    """The pod operator that runs ``python -m mlops_pack.pod_entry <arguments>``;
    ``ca_bundle``: the MLflow server's CA certificates, as the task read them."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    env = dict(os.environ if env is None else env)
    tracking = env.get("MLFLOW_TRACKING_URI", "")
    if not tracking.startswith(("http://", "https://")):
        raise MlopsBadInputFailure(
            f"runner 'kubernetes': MLFLOW_TRACKING_URI must be an MLflow server (http or "
            f"https) that pods reach, got {tracking!r}; pods share no file system with "
            "the worker"
        )
    variables = thread_environment(limits)
    variables |= {name: env[name] for name in PLAIN_ENV if env.get(name)}
    if ca_bundle is not None:  # a CA is public: it travels with the inputs, into the work dir
        inputs = {**inputs, mlflow_credentials.CA_FILE: ca_bundle}
        variables[mlflow_credentials.CA_VARIABLE] = f"{POD_WORK}/{mlflow_credentials.CA_FILE}"
    variables |= {
        "MLOPS_PACK_HOME": POD_HOME,
        "MLOPS_PACK_DATA_DIR": POD_DATA,
        "MLOPS_PACK_POD_INPUTS": json.dumps(inputs),
    }
    secret = env.get("MLOPS_PACK_K8S_SECRET")
    volumes = [
        k8s.V1Volume(
            name="tmp",
            empty_dir=k8s.V1EmptyDirVolumeSource(
                medium="Memory", size_limit=_quantity(limits.tmpfs_size)
            ),
        ),
        k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    mounts = [
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),  # noqa: S108
        k8s.V1VolumeMount(name="work", mount_path="/work"),
    ]
    claim = env.get("MLOPS_PACK_K8S_DATA_CLAIM")
    if claim:  # the data batches, read-only, from a PersistentVolumeClaim
        volumes.append(
            k8s.V1Volume(
                name="data",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=claim, read_only=True
                ),
            )
        )
        mounts.append(k8s.V1VolumeMount(name="data", mount_path=POD_DATA, read_only=True))
    quota = {"cpu": str(limits.cpus), "memory": _quantity(limits.memory)}
    return KubernetesPodOperator(
        task_id=task_id,
        namespace=env.get("MLOPS_PACK_K8S_NAMESPACE") or None,
        kubernetes_conn_id=env.get("MLOPS_PACK_K8S_CONN_ID") or "kubernetes_default",
        image=image,
        name=f"mlops-{task_id}",
        cmds=["python", "-m", "mlops_pack.pod_entry"],
        arguments=arguments,
        env_vars=variables,
        env_from=(
            [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=secret))] if secret else None
        ),
        labels=labels,
        volumes=volumes,
        volume_mounts=mounts,
        container_resources=k8s.V1ResourceRequirements(limits=quota, requests=quota),
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=POD_USER,
            run_as_group=POD_USER,
            fs_group=POD_USER,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=k8s.V1SecurityContext(
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            privileged=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        automount_service_account_token=False,
        hostnetwork=False,
        do_xcom_push=True,
        active_deadline_seconds=int(timeout_seconds) if timeout_seconds else None,
        on_finish_action="delete_pod",
        get_logs=True,
    )


def run_step_pod(pod_operator, context: Any) -> dict[str, Any] | None:
    """Run the pod; the step's result record as the sidecar read it (None if absent)."""
    value = pod_operator.execute(context)
    if isinstance(value, str):
        value = json.loads(value)
    return value
