"""Reading a data partition as a stream of Arrow record batches, and fingerprinting its content."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
from pyarrow import csv as pacsv

from store.errors import ConfigError, InputError

BATCH_ROWS = 131_072


@dataclass(frozen=True)
class Partition:
    """One input partition: where it is, what it is called, and a hash of its bytes.

    The hash is computed in a thread of its own from the moment the partition is opened, so it
    overlaps with scoring; reading ``fingerprint`` waits for it.
    """

    uri: str
    root: Path
    key: str
    files: tuple[Path, ...]
    format: str
    pending_fingerprint: Future[str] = field(repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        try:
            return self.pending_fingerprint.result()
        except OSError as exc:
            raise InputError(f"{self.root}: cannot be read ({exc.strerror or exc})") from exc


def open_partition(path: Path, *, key: str | None = None) -> Partition:
    """Find the files of a Parquet file, a directory of Parquet (Hive-style ``dt=...`` accepted),
    or a CSV file. The partition key defaults to the file or directory name."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory; give a Parquet file, a directory of Parquet, or a CSV")
    if path.is_dir():
        files = tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".parquet"
                             and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)))
        if not files:
            raise InputError(f"{path}: the directory holds no .parquet files")
        fmt = "parquet"
    else:
        suffix = path.suffix.lower()
        fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix, "")
        if not fmt:
            raise ConfigError(f"{path.name}: unknown file type {suffix!r}; give a .parquet or .csv file")
        files = (path,)
    root = path if path.is_dir() else path.parent
    return Partition(
        uri=path.resolve().as_uri(),
        root=path.resolve(),
        key=key or (path.name if path.is_dir() else path.stem),
        files=files,
        format=fmt,
        pending_fingerprint=_in_thread(fingerprint, files, root),
    )


def _in_thread(fn: Callable[..., str], *args: Any) -> Future[str]:
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # delivered to whoever reads the result
            future.set_exception(exc)

    threading.Thread(target=run, name="predstore-fingerprint", daemon=True).start()
    return future


def path_of(uri: str) -> Path:
    """The local path of a ``file://`` URI."""
    return Path(unquote(urlsplit(uri).path))


def fingerprint(files: Sequence[Path], root: Path) -> str:
    """sha256 over each file's relative name and bytes: equal only for the same content."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def dataset(partition: Partition, text_columns: Sequence[str] = ()) -> ds.Dataset:
    """The partition as a pyarrow dataset. CSV columns in ``text_columns`` are read as text, so
    that a bad value becomes a rejected row instead of a failed read."""
    try:
        if partition.format == "csv":
            convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in text_columns},
                                           strings_can_be_null=True)
            fmt = ds.CsvFileFormat(convert_options=convert)
            return ds.dataset(list(map(str, partition.files)), format=fmt)
        if partition.root.is_dir():
            return ds.dataset(list(map(str, partition.files)), format="parquet",
                              partitioning=ds.HivePartitioning.discover(), partition_base_dir=str(partition.root))
        return ds.dataset(str(partition.root), format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{partition.uri}: cannot be read as {partition.format} ({_first_line(exc)})") from exc


def columns_of(data: ds.Dataset) -> list[str]:
    return list(data.schema.names)


def batches(data: ds.Dataset, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream record batches of ``columns``; read errors become `InputError`."""
    try:
        yield from data.to_batches(columns=list(columns), batch_size=BATCH_ROWS, batch_readahead=2,
                                   fragment_readahead=1, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"the partition could not be read to the end ({_first_line(exc)})") from exc


def count_rows(data: ds.Dataset, partition: Partition) -> int | None:
    """Rows in the partition when the format says so cheaply (Parquet metadata), else None."""
    if partition.format != "parquet":
        return None
    try:
        return int(data.count_rows())
    except (pa.ArrowInvalid, OSError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
