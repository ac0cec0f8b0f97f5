"""The promotion lock's DSN reaches a step container as a file (MLOPS_PACK_LOCK_DSN_FILE),
never in its environment, which ``docker inspect`` shows to anyone with the engine."""

from __future__ import annotations

import pytest
from mlops_pack.errors import BadInputError
from mlops_pack.settings import Settings


def test_the_dsn_is_read_from_the_file_the_variable_names(tmp_path):
    secret = tmp_path / "lock_dsn"
    secret.write_text("postgresql://mlops_lock:pw@db/mlops_lock\n")
    settings = Settings.from_env({"MLOPS_PACK_LOCK_DSN_FILE": str(secret)})
    assert settings.lock_dsn == "postgresql://mlops_lock:pw@db/mlops_lock"
    # The variable itself wins where a process has it (a worker, a test).
    both = {"MLOPS_PACK_LOCK_DSN": "postgresql://other/db", "MLOPS_PACK_LOCK_DSN_FILE": str(secret)}
    assert Settings.from_env(both).lock_dsn == "postgresql://other/db"
    assert Settings.from_env({}).lock_dsn is None


def test_an_unreadable_dsn_file_names_the_variable_and_the_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(BadInputError) as caught:
        Settings.from_env({"MLOPS_PACK_LOCK_DSN_FILE": str(missing)})
    message = str(caught.value)
    assert f"MLOPS_PACK_LOCK_DSN_FILE={missing}" in message
    assert "No such file" in message and "Fix:" in message
