"""Reading training data: typed, chunked, with errors that name the file and the fix.

Files are read through pyarrow with the column types the spec declares, so a bad value
surfaces as a conversion error that names the column and the value, instead of pandas
silently turning a numeric column into strings. Chunked reading keeps memory bounded for
files larger than RAM.

The file's own bytes decide its format (Parquet files start with ``PAR1``), so a Parquet
batch given to a CSV spec is read as Parquet instead of failing as "not valid UTF-8".
Error messages describe the file (column names, counts, one bad value) and never quote a
raw line: a message ends up in records and logs, and the file may not be a data file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlops_pack.data_files import DataProblem, check_file
from mlops_pack.spec import ModelSpec

BLOCK_BYTES = 4 << 20
PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Header:
    columns: list[str]
    missing: list[str]
    extra: list[str]
    format: str


def _label_type(spec: ModelSpec) -> pa.DataType:
    if spec.task == "regression":
        return pa.float64()
    if all(isinstance(c, int) for c in spec.classes or []):
        return pa.int64()
    return pa.string()


def arrow_types(spec: ModelSpec) -> dict[str, pa.DataType]:
    types = {c.name: pa.float64() if c.type == "numeric" else pa.string() for c in spec.columns}
    types[spec.target] = _label_type(spec)
    return types


def file_format(path: Path, spec: ModelSpec) -> str:
    """The format the file really has: Parquet by its magic bytes, else CSV.

    The suffix (or a binary file under a Parquet spec) only sharpens the error for a file
    that claims to be Parquet and is not.
    """
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    named = path.suffix.lower() in PARQUET_SUFFIXES
    if named or (spec.data.format == "parquet" and b"\x00" in head):
        claim = f"named {path.suffix}" if named else "data.format says parquet"
        raise DataProblem(
            path,
            "format",
            f"{claim}, but the file is not Parquet (no PAR1 magic bytes)",
            "write it as Parquet, or as CSV with a .csv name",
        )
    return "csv"


def read_header(path: Path, spec: ModelSpec) -> Header:
    """Check the column set before reading a row: missing and extra columns are errors."""
    check_file(path)
    fmt = file_format(path, spec)
    names = _file_columns(path, spec, fmt)
    expected = spec.expected_columns()
    missing = [c for c in expected if c not in names]
    extra = [c for c in names if c not in expected]
    if len(names) == 1 and missing:
        other = next((d for d in ";\t|," if d != spec.data.delimiter and d in names[0]), None)
        if other:
            # Say what the header looks like, not what it says: it may not be data at all.
            raise DataProblem(
                path,
                "columns",
                f"the header is a single column of {len(names[0])} characters: it looks "
                f"delimited by {other!r}, not {spec.data.delimiter!r}",
                f"re-save with {spec.data.delimiter!r} as delimiter or set data.delimiter",
            )
    return Header(columns=names, missing=missing, extra=extra, format=fmt)


def _file_columns(path: Path, spec: ModelSpec, fmt: str) -> list[str]:
    """The column names in the file's own order."""
    if fmt == "parquet":
        try:
            return pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataProblem(
                path, "format", f"not a readable Parquet file ({exc})", "re-write the file"
            ) from None
    with path.open("rb") as handle:
        first = handle.readline(1 << 20)
    try:
        line = first.decode(spec.data.encoding)
    except UnicodeDecodeError as exc:
        raise DataProblem(
            path,
            "encoding",
            f"header is not valid {spec.data.encoding} (byte {exc.start})",
            "re-save the file as UTF-8 or set data.encoding",
        ) from None
    return next(csv.reader(io.StringIO(line.lstrip("\ufeff")), delimiter=spec.data.delimiter))


_CONVERSION = re.compile(r"CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to (\w+): (.*)")
_ROW_WIDTH = re.compile(r"(?:Row #(\d+): )?Expected (\d+) columns, got (\d+)")
# pyarrow appends the offending line after "got N: "; that text is the file's content.
_QUOTED_ROW = re.compile(r"(got \d+): .*", re.DOTALL)


def iter_chunks(
    path: Path, spec: ModelSpec, chunk_rows: int, columns: list[str]
) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_rows`` rows with the spec's dtypes."""
    types = {name: t for name, t in arrow_types(spec).items() if name in columns}
    fmt = file_format(path, spec)
    try:
        if fmt == "parquet":
            handle = pq.ParquetFile(path)
            for batch in handle.iter_batches(batch_size=chunk_rows, columns=columns):
                yield _typed_parquet(batch, types, path)
            return
        # Small blocks: pyarrow keeps several blocks in flight, so the block size, not the
        # chunk size, is what bounds the reader's memory.
        encoding = spec.data.encoding
        read = pacsv.ReadOptions(
            block_size=BLOCK_BYTES,
            encoding="utf8" if encoding.lower().replace("-", "") == "utf8" else encoding,
        )
        parse = pacsv.ParseOptions(delimiter=spec.data.delimiter)
        convert = pacsv.ConvertOptions(
            column_types=types, include_columns=columns, strings_can_be_null=True
        )
        reader = pacsv.open_csv(
            path, read_options=read, parse_options=parse, convert_options=convert
        )
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_rows).to_pandas()
                # Carry the remainder into the next chunk instead of yielding a sliver.
                rest = table.slice(chunk_rows)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            yield from _split(pa.Table.from_batches(pending), chunk_rows)
    except pa.ArrowInvalid as exc:
        # pyarrow numbers columns as they stand in the file, not as the spec lists them.
        raise _explain(path, str(exc), _file_columns(path, spec, fmt), spec) from None


def _split(table: pa.Table, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for offset in range(0, table.num_rows, chunk_rows):
        yield table.slice(offset, chunk_rows).to_pandas()


def _typed_parquet(
    batch: pa.RecordBatch, types: dict[str, pa.DataType], path: Path
) -> pd.DataFrame:
    arrays = {}
    for name in batch.schema.names:
        column = batch.column(name)
        try:
            arrays[name] = column.cast(types[name]) if column.type != types[name] else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataProblem(
                path,
                "dtypes",
                f"column {name!r} has type {column.type}, expected {types[name]} ({exc})",
                "fix the column's values or its declared type in the spec",
            ) from None
    return pa.table(arrays).to_pandas()


def _explain(path: Path, message: str, columns: list[str], spec: ModelSpec) -> DataProblem:
    if "invalid UTF8" in message or "UTF-8" in message or "decode" in message.lower():
        return DataProblem(
            path,
            "encoding",
            "the file is not valid UTF-8",
            "re-save it as UTF-8 or set data.encoding",
        )
    if "Empty CSV file" in message:
        return DataProblem(path, "file", "file is empty", "write a header and rows")
    match = _CONVERSION.search(message)
    if match:
        index, row, kind, detail = match.groups()
        name = columns[int(index)] if int(index) < len(columns) else f"#{index}"
        at = f" row {row}" if row else ""
        return DataProblem(
            path,
            "dtypes",
            f"column {name!r}{at}: expected {kind}, got {detail}",
            "fix the value or declare the column's type correctly in the spec",
        )
    width = _ROW_WIDTH.search(message)
    if width:
        row, expected, got = width.groups()
        at = f"row {row} has" if row else "a row has"
        return DataProblem(
            path,
            "format",
            f"rows do not match the header ({at} {got} fields, the header {expected})",
            f"check the delimiter (spec says {spec.data.delimiter!r}) and quoting",
        )
    detail = _QUOTED_ROW.sub(r"\1", message.strip())
    return DataProblem(
        path,
        "format",
        f"cannot parse the file ({detail})",
        "check data.format, data.delimiter and data.encoding",
    )


def read_frame(path: Path, spec: ModelSpec) -> pd.DataFrame:
    """Read a whole file (training, holdout) with the spec's columns and dtypes."""
    header = read_header(path, spec)
    if header.missing:
        raise DataProblem(
            path,
            "columns",
            f"missing columns {header.missing}",
            "add them or fix the spec's columns",
        )
    chunks = list(iter_chunks(path, spec, 1_000_000, spec.expected_columns()))
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in spec.expected_columns()})
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    return frame[spec.expected_columns()]


def row_hashes(frame: pd.DataFrame, spec: ModelSpec) -> pd.Series:
    """A 64-bit hash of each row's feature and label values (ids excluded).

    Used to keep holdout rows out of training: an id column would make a copied row look
    new, so only the values a model sees count.
    """
    cols = [c.name for c in spec.columns if c.role != "id"] + [spec.target]
    return pd.util.hash_pandas_object(frame[cols], index=False)
