"""``include/prometheus/prometheus.tls.yml``: the shipped Prometheus configuration with
the model servers scraped over HTTPS, for ``docker-compose.tls.yaml``.

Prometheus takes a job's scheme from its configuration only (no environment variables),
so the override mounts this twin of ``prometheus.yml`` instead. It is derived, never
edited: ``mlops-pack stack dashboards`` writes it again after a change to
``prometheus.yml``, and the tests check that the shipped twin is what it writes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SOURCE = Path("prometheus") / "prometheus.yml"
TWIN = Path("prometheus") / "prometheus.tls.yml"
# Where the override mounts the stack's CA (stack tls) in the Prometheus container.
CA_IN_CONTAINER = "/etc/prometheus/tls/ca.pem"
SERVER_JOB_PREFIX = "model-server-"
HEADER = (
    "# Written by `mlops-pack stack dashboards` from prometheus.yml (edit that file, then\n"
    "# run it): the model servers' jobs over HTTPS, each server verified against the\n"
    "# stack's CA (`mlops-pack stack tls`). docker-compose.tls.yaml mounts this file.\n"
)


def over_tls(config: dict) -> dict:
    """``config`` with every model server's job on https, verified against the CA."""
    jobs = [
        _https(job) if str(job.get("job_name", "")).startswith(SERVER_JOB_PREFIX) else job
        for job in config.get("scrape_configs", [])
    ]
    return {**config, "scrape_configs": jobs}


def _https(job: dict) -> dict:
    # A new tls_config each time: one object shared by two jobs would be dumped as a
    # YAML anchor and alias.
    return {**job, "scheme": "https", "tls_config": {"ca_file": CA_IN_CONTAINER}}


def twin_text(include_dir: Path) -> str:
    source = yaml.safe_load((include_dir / SOURCE).read_text(encoding="utf-8"))
    return HEADER + yaml.safe_dump(over_tls(source), sort_keys=False)


def write_twin(include_dir: Path) -> Path:
    path = include_dir / TWIN
    path.write_text(twin_text(include_dir), encoding="utf-8")
    return path
