"""Tampered files and pickle payloads are refused before any byte is deserialised."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlparse

import pytest
import skops.io as sio
from mlops_pack.errors import EXIT_BAD_INPUT, UntrustedArtifactError
from mlops_pack.hashing import sha256_file
from mlops_pack.model_io import load_model
from support import CHURN_SPEC, run_cli


class _Payload:
    """Pickling this object makes the loader create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class Gadget:
    """A type no reviewer has trusted."""

    def __init__(self) -> None:
        self.value = 1


def _model_file(registry, version: str) -> Path:
    source = registry.version("churn", version).source
    return Path(urlparse(source).path) / "model.skops"


@pytest.fixture
def champion(store, registry, tmp_path) -> Path:
    assert run_cli("retrain", "--spec", CHURN_SPEC, "--out", tmp_path / "r1")[0] == 0
    return _model_file(registry, "1")


def _evaluate_v1_as_challenger(registry, tmp_path):
    # Point the champion alias away so v1 can be evaluated as the challenger again.
    registry.client.delete_registered_model_alias("churn", "champion")
    return run_cli("evaluate", "--spec", CHURN_SPEC, "--challenger", "1", "--out", tmp_path / "e")


def test_a_tampered_model_file_is_refused(champion, registry, tmp_path):
    data = bytearray(champion.read_bytes())
    data[len(data) // 2] ^= 0xFF
    champion.write_bytes(bytes(data))
    code, result = _evaluate_v1_as_challenger(registry, tmp_path)
    assert code == EXIT_BAD_INPUT
    assert "sha256 mismatch" in result["error"]


def test_a_pickle_payload_is_refused_and_never_runs(champion, registry, tmp_path):
    marker = tmp_path / "payload-ran"
    champion.write_bytes(pickle.dumps(_Payload(marker)))
    # The attacker also rewrote the recorded hash: the format check must still refuse it.
    registry.client.set_model_version_tag(
        "churn", "1", "mlops.artifact_sha256", sha256_file(champion)
    )
    code, result = _evaluate_v1_as_challenger(registry, tmp_path)
    assert code == EXIT_BAD_INPUT
    assert "not a skops archive" in result["error"]
    assert not marker.exists()


def test_a_skops_archive_with_an_untrusted_type_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    sio.dump({"model": Gadget()}, path)
    with pytest.raises(UntrustedArtifactError, match="not on the reviewed trust list"):
        load_model(path, sha256_file(path))


def test_an_unpinned_model_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    sio.dump({"a": 1}, path)
    with pytest.raises(UntrustedArtifactError, match="no recorded sha256"):
        load_model(path, None)
