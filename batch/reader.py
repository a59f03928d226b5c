"""Reading a data partition as a stream of Arrow record batches, and fingerprinting its content."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv as pacsv

from store.errors import ConfigError, InputError

BATCH_ROWS = 131_072
CSV_BLOCK_BYTES = 16 << 20


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


def columns_of(partition: Partition) -> list[str]:
    """The column names of the partition (of its first file)."""
    first = partition.files[0]
    try:
        if partition.format == "csv":
            with pacsv.open_csv(first) as stream:
                return list(stream.schema.names)
        return list(pq.read_schema(first).names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{first}: cannot be read as {partition.format} ({_first_line(exc)})") from exc


def count_rows(partition: Partition) -> int | None:
    """Rows in the partition when the format says so cheaply (Parquet metadata), else None."""
    if partition.format != "parquet":
        return None
    try:
        return sum(pq.read_metadata(f).num_rows for f in partition.files)
    except (pa.ArrowInvalid, OSError):
        return None


@dataclass(frozen=True)
class Slice:
    """Consecutive row groups of one Parquet file, or a whole CSV file: one task's share.

    Its row groups are also the units the run's digest is made of, so the digest does not depend
    on how a run was split among workers.
    """

    path: Path
    row_groups: tuple[int, ...]  # empty for a CSV file
    first_row: int  # number (from 1) of its first row in the partition
    rows: int | None


def plan(partition: Partition, *, pieces: int = 1) -> list[Slice]:
    """Split the partition into about ``pieces`` slices of whole row groups (at least one per file)."""
    if partition.format == "csv":
        return [Slice(path=f, row_groups=(), first_row=1, rows=None) for f in partition.files]
    try:
        groups = [(f, i, pq.read_metadata(f).row_group(i).num_rows)
                  for f in partition.files for i in range(pq.read_metadata(f).num_row_groups)]
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{partition.root}: cannot be read as parquet ({_first_line(exc)})") from exc
    total = sum(rows for _, _, rows in groups)
    target = max(1, -(-total // max(1, pieces)))
    slices: list[Slice] = []
    current: list[tuple[Path, int, int]] = []
    first = 1
    for group in groups:
        if current and (current[0][0] != group[0] or sum(r for _, _, r in current) >= target):
            slices.append(_slice(current, first))
            first += slices[-1].rows or 0
            current = []
        current.append(group)
    if current:
        slices.append(_slice(current, first))
    return slices


def _slice(groups: list[tuple[Path, int, int]], first: int) -> Slice:
    return Slice(path=groups[0][0], row_groups=tuple(i for _, i, _ in groups), first_row=first,
                 rows=sum(r for _, _, r in groups))


def units(part: Slice, columns: Sequence[str]) -> Iterator[Iterator[pa.RecordBatch]]:
    """The slice's row groups (a CSV file is one), each as a stream of record batches of
    ``columns``. Memory stays flat however large the file. CSV columns are read as text, so that
    a bad value becomes a rejected row instead of a failed read. Read errors become `InputError`."""
    try:
        if not part.row_groups:
            convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                           include_columns=list(columns), strings_can_be_null=True)
            with pacsv.open_csv(part.path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                convert_options=convert) as stream:
                yield _translated(stream, part.path)
            return
        # pre_buffer would keep every column chunk read so far: memory would grow with the file.
        with pq.ParquetFile(part.path, pre_buffer=False) as parquet:
            for group in part.row_groups:
                yield _translated(parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns),
                                                       row_groups=[group]), part.path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"{part.path}: cannot be read ({_first_line(exc)})") from exc


def batches(partition: Partition, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Every record batch of ``columns`` in the partition, in order, in flat memory."""
    for part in plan(partition):
        for unit in units(part, columns):
            yield from unit


def _translated(stream: Iterable[pa.RecordBatch], path: Path) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"{path}: could not be read to the end ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
