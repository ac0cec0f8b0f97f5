"""Data files a run may read: which paths are allowed, and what a readable file is.

A run's data path may come from a trigger form or a REST call, so it is checked against
the data directory (and the extra roots a deployment lists) before anything reads it.
The steps check it before reading; an Airflow worker checks it before copying the file
into a step that shares no file system with it. Standard library only: the workers
import it without the step world.
"""

from __future__ import annotations

from pathlib import Path

from mlops_pack.errors import BadInputError


class DataProblem(BadInputError):
    """A file that cannot be read as the spec describes; ``rule`` names the broken rule."""

    def __init__(self, path: Path | str, rule: str, message: str, fix: str) -> None:
        text = f"{path}: {rule}: {message}. Fix: {fix}"
        super().__init__(text, {"file": str(path), "rule": rule, "message": message, "fix": fix})
        self.rule = rule


def check_file(path: Path) -> None:
    """A readable, non-empty regular file, or a DataProblem naming what it is instead."""
    if not path.exists():
        raise DataProblem(path, "file", "file not found", "check data.path or the run's data_path")
    if path.is_dir():
        raise DataProblem(
            path, "file", "is a directory, not a file", "give the path of one CSV or Parquet file"
        )
    if not path.is_file():
        # A FIFO or a device would block or never end; only regular files are data.
        raise DataProblem(
            path, "file", "is not a regular file", "give the path of one CSV or Parquet file"
        )
    if path.stat().st_size == 0:
        raise DataProblem(path, "file", "file is empty (0 bytes)", "write a header and rows")


def resolve_data_file(base: Path, relative: str, roots: tuple[Path, ...] = ()) -> Path:
    """``relative`` under the data directory ``base`` (an absolute path replaces it),
    refused unless it resolves under ``base`` or one of ``roots``, and checked to be a
    readable data file. The operators use it too, to copy a run's file into a step that
    shares no file system with the worker."""
    path = base / relative
    real = path.resolve()
    if not any(real.is_relative_to(root.resolve()) for root in (base, *roots)):
        target = f" (it resolves to {real})" if real != path.absolute() else ""
        raise DataProblem(
            path,
            "data_path",
            f"outside the data directory {base}{target}",
            f"put the file under {base}, or list its directory in MLOPS_PACK_DATA_ROOTS",
        )
    check_file(path)
    return path
