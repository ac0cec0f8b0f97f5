"""``python -m mlops_pack.serving --spec <spec> ...``: run the model server for one model.

Secrets are read from files (mounted read-only into the container), never from the
command line or the environment, where ``ps`` and ``docker inspect`` would show them.

``--registry-url`` makes the server fetch versions from the MLflow tracking server itself
(``models:/<name>/<version>``, checked against the sha256 recorded on the version);
``--models-dir`` is then its own writable cache. Credentials for that server, if it
needs them (a read-only user is enough), come from ``--registry-credentials-file``:
``MLFLOW_TRACKING_USERNAME=...`` and ``MLFLOW_TRACKING_PASSWORD=...``, or
``MLFLOW_TRACKING_TOKEN=...``, one per line.

``--tls-cert-file`` and ``--tls-key-file`` make it answer HTTPS only, so that its admin
token and prediction keys do not cross a network between hosts in the clear; clients of
the pack verify it against ``MLOPS_PACK_SERVER_CA`` when a private CA signed it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from mlops_pack import mlflow_credentials
from mlops_pack.errors import BadInputError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlops_pack.serving")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument(
        "--models-dir", required=True, type=Path, help="staged models (ro), or the fetch cache"
    )
    parser.add_argument("--registry-url", help="fetch versions from this MLflow tracking server")
    parser.add_argument("--registry-credentials-file", type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--log-dir", required=True, type=Path, help="prediction logs")
    parser.add_argument("--admin-token-file", required=True, type=Path)
    parser.add_argument("--prediction-key-file", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: the spec's serving.port")
    parser.add_argument("--tls-cert-file", type=Path, help="serve HTTPS: the certificate (PEM)")
    parser.add_argument("--tls-key-file", type=Path, help="serve HTTPS: its private key (PEM)")
    args = parser.parse_args(argv)
    tls = _tls_options(args.tls_cert_file, args.tls_key_file)

    # One thread per predict: the best single-row latency, and no OpenMP spin-waiting.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    import uvicorn

    from mlops_pack.serving.app import ModelServer, ServerConfig
    from mlops_pack.spec import load_spec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    spec = load_spec(args.spec)
    if args.registry_credentials_file:
        try:
            mlflow_credentials.load(args.registry_credentials_file, "--registry-credentials-file")
        except BadInputError as exc:
            raise SystemExit(f"error: {exc}") from None
    server = ModelServer(
        ServerConfig(
            spec=spec,
            models_dir=args.models_dir,
            state_dir=args.state_dir,
            log_dir=args.log_dir,
            admin_token=args.admin_token_file.read_text(encoding="utf-8").strip(),
            prediction_key=args.prediction_key_file.read_text(encoding="utf-8").strip(),
            image=os.environ.get("MLOPS_PACK_IMAGE", ""),
            registry_url=args.registry_url,
        )
    )
    uvicorn.run(
        server.app(),
        host=args.host,
        port=args.port or spec.serving.port,
        log_level="warning",
        access_log=False,  # request lines add latency; the prediction log records each one
        timeout_graceful_shutdown=10,
        **tls,
    )


def _tls_options(cert: Path | None, key: Path | None) -> dict[str, str]:
    """uvicorn's TLS options: HTTPS only when both files are given, plain HTTP when
    neither; anything else stops the start with the fix, before a model is loaded."""
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise SystemExit(
            "error: --tls-cert-file and --tls-key-file go together (the certificate chain "
            "and its private key, PEM). Fix: give both, or neither for plain HTTP"
        )
    for option, path in (("--tls-cert-file", cert), ("--tls-key-file", key)):
        if path.is_dir():  # what Docker makes when a bind mount's file is missing
            raise SystemExit(
                f"error: {option} {path} is a folder, not the file: the file the compose "
                "file mounts there was missing on the host (a .stack/tls written before this "
                "model was served, or by an older stack tls). Fix: remove the folders Docker "
                "made and .stack/tls, run `mlops-pack stack tls` again and restart the stack"
            )
        if not path.is_file() or not os.access(path, os.R_OK):
            raise SystemExit(
                f"error: {option} {path} is not a readable file. Fix: mount the server's "
                "certificate and key readable by its user"
            )
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


if __name__ == "__main__":
    main()
