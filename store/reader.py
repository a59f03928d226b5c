"""Reading a data partition, on the local disk or an object store, as a stream of Arrow record
batches, and fingerprinting its content."""

from __future__ import annotations

import hashlib
import logging
import os
import re
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
from pyarrow import fs as pafs

from store import faults, storage
from store.errors import ConfigError, InputError, first_line

log = logging.getLogger("predstore.store.reader")

BATCH_ROWS = 131_072
CSV_BLOCK_BYTES = 16 << 20
#: Longest partition key accepted (characters); the ledger indexes it.
MAX_KEY_LENGTH = 256
#: Field separators a CSV is sometimes written with instead of commas, as named in errors.
OTHER_DELIMITERS = {";": "';'", "\t": "tabs", "|": "'|'"}


@dataclass(frozen=True)
class Partition:
    """One input partition: where it is, what it is called, and a fingerprint of its content.

    ``filesystem`` is None for the local disk, else the object store the files are on (their
    paths then being paths in that store). The fingerprint is computed in a thread of its own
    from the moment the partition is opened, so it overlaps with scoring; reading
    ``fingerprint`` waits for it.
    """

    uri: str
    root: str
    key: str
    files: tuple[Path, ...]
    format: str
    pending_fingerprint: Future[str] = field(repr=False, compare=False)
    filesystem: pafs.FileSystem | None = field(default=None, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        try:
            return self.pending_fingerprint.result()
        except OSError as exc:
            if self.filesystem is not None:
                raise storage.translate(exc, self.uri) from exc
            raise InputError(f"{self.root}: cannot be read ({exc.strerror or exc})") from exc


def open_partition(where: Path | str, *, key: str | None = None, folders_as_one: bool = False) -> Partition:
    """Find the files of a Parquet file, a folder of Parquet (Hive-style ``dt=...`` accepted),
    or a CSV file, on the local disk or at an object-store URI. The partition key defaults to
    the file or folder name.

    A folder whose files lie in several Hive-style folders (``dt=2026-01-01/``, ``dt=2026-01-02/``)
    is read as one partition, with a warning saying so, unless the caller means it: it gave the
    ``key`` (``--partition``), or ``folders_as_one`` (a file of labels, which has no partitions).
    """
    if isinstance(where, str):
        where = storage.target(where)
    if isinstance(where, str):
        partition = _open_remote(where, key=key)
    else:
        partition = _open_local(where, key=key)
    if key is None and not folders_as_one:
        _warn_if_merged(partition)
    return partition


def _warn_if_merged(partition: Partition) -> None:
    """Log a warning when the partition's files lie in more than one Hive-style ``name=value`` folder."""
    folders = hive_folders(partition.files)
    if len(folders) < 2:
        return
    example = Path(os.path.commonpath(partition.files)) / folders[0]
    shown = example.as_posix() if partition.filesystem is None else storage.uri_of(partition.filesystem,
                                                                                   example.as_posix())
    log.warning("%s holds %d Hive-style folders (%s ... %s): they are read as one partition %r; score each folder "
                "on its own (%s, ...), or pass --partition to read them as one on purpose",
                partition.root, len(folders), folders[0], folders[-1], partition.key, shown)


def hive_folders(files: Sequence[Path]) -> list[str]:
    """The Hive-style folders (``dt=2026-01-01``) just below the files' common folder, sorted."""
    if len(files) < 2:
        return []
    common = Path(os.path.commonpath(files))
    tops = {f.relative_to(common).parts[0] for f in files if len(f.relative_to(common).parts) > 1}
    return sorted(t for t in tops if "=" in t)


def _open_local(path: Path, *, key: str | None) -> Partition:
    """A partition on the local disk."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory; give a Parquet file, a directory of Parquet, or a CSV")
    if path.is_dir():
        files = tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".parquet"
                             and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)))
        if not files:
            raise InputError(f"{path}: the directory holds no .parquet files")
        fmt = "parquet"
    else:
        fmt = _format(path.name)
        files = (path,)
    root = path if path.is_dir() else path.parent
    return Partition(
        uri=path.resolve().as_uri(),
        root=str(path.resolve()),
        key=check_key(key or (path.name if path.is_dir() else path.stem)),
        files=files,
        format=fmt,
        pending_fingerprint=_in_thread(fingerprint, files, root),
    )


def _open_remote(uri: str, *, key: str | None) -> Partition:
    """A partition on an object store, found by listing. Its fingerprint comes from the store's
    ETags where it gives them (nothing downloaded), from the content otherwise."""
    uri = uri.rstrip("/")
    fs, path = storage.filesystem(uri)
    found = storage.info(fs, path, shown=uri)
    if found.type == pafs.FileType.NotFound:
        raise storage.missing(fs, path, shown=uri)
    if found.type == pafs.FileType.Directory:
        names = sorted(f.path for f in storage.listing(fs, path, shown=uri) if f.type == pafs.FileType.File
                       and f.path.lower().endswith(".parquet")
                       and not any(part.startswith((".", "_")) for part in f.path[len(path) + 1:].split("/")))
        if not names:
            raise InputError(f"{uri}: the prefix holds no .parquet files")
        fmt, root = "parquet", path
    else:
        fmt, names, root = _format(found.base_name), [path], path.rsplit("/", 1)[0]
    files = tuple(Path(name) for name in names)
    name = storage.basename(uri)
    return Partition(
        uri=uri,
        root=uri,
        key=check_key(key or (name if found.type == pafs.FileType.Directory else Path(name).stem)),
        files=files,
        format=fmt,
        pending_fingerprint=_in_thread(fingerprint, files, Path(root), fs),
        filesystem=fs,
    )


def _format(name: str) -> str:
    suffix = Path(name).suffix.lower()
    fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix, "")
    if not fmt:
        raise ConfigError(f"{name}: unknown file type {suffix!r}; give a .parquet or .csv file")
    return fmt


def check_key(key: str) -> str:
    """A partition key as given, refused (`ConfigError`) if it could not be stored or shown in one line."""
    if len(key) > MAX_KEY_LENGTH:
        raise ConfigError(f"the partition key is longer than {MAX_KEY_LENGTH} characters ({len(key):,}); "
                          "pass a shorter --partition")
    if any(not ch.isprintable() and ch != " " for ch in key):
        raise ConfigError(f"the partition key {key!r} holds a control character; pass another --partition")
    return key


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


def fingerprint(files: Sequence[Path], root: Path, filesystem: pafs.FileSystem | None = None) -> str:
    """sha256 over each file's relative name and bytes: equal only for the same content. On a
    store that gives ETags (S3), over each name and ETag instead: the store's own hash of the
    content, read from a listing, so an unchanged partition is recognised without downloading it."""
    faults.point("fingerprint")
    digest = hashlib.sha256()
    tags = storage.etags(filesystem, [str(f) for f in files]) if filesystem is not None else None
    if tags is not None:
        digest.update(b"etag\0")
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        digest.update(tags[str(f)].encode() + b"\0" if tags is not None else storage.digest(filesystem, str(f)))
    return digest.hexdigest()


def columns_of(partition: Partition) -> list[str]:
    """The column names of the partition: of its CSV file, or those every Parquet file has, in
    the first file's order (a name twice if a file has it twice)."""
    fs = partition.filesystem
    if partition.format == "csv":
        return _csv_columns(partition.files[0], fs)
    names: list[str] = []
    common: set[str] = set()
    for i, f in enumerate(partition.files):
        try:
            found = list(pq.read_schema(str(f), filesystem=fs).names)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{_shown(f, fs)}: cannot be read as parquet ({first_line(exc)})") from exc
        names, common = (found, set(found)) if i == 0 else (names, common & set(found))
    return [n for n in names if n in common]


def _csv_columns(path: Path, fs: pafs.FileSystem | None = None) -> list[str]:
    """A CSV file's header, or an `InputError` saying why it is not a UTF-8, comma-separated CSV."""
    shown = _shown(path, fs)
    try:
        with _open(path, fs) as fh:
            head = fh.read(4096)
        if not head:
            raise InputError(f"{shown}: the file is empty (0 bytes)")
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
            raise InputError(f"{shown}: the file is not UTF-8 text (UTF-16?); save it as UTF-8")
        with pacsv.open_csv(_source(path, fs)) as stream:
            names = list(stream.schema.names)
    except pa.ArrowException as exc:
        raise InputError(f"{shown}: cannot be read as csv ({_csv_problem(exc)})") from exc
    except OSError as exc:
        raise InputError(f"{shown}: cannot be read ({exc.strerror or first_line(exc)})") from exc
    if len(names) == 1:
        for sep, name in OTHER_DELIMITERS.items():
            if sep in names[0]:
                raise InputError(f"{shown}: the header is one column {names[0][:60]!r}: the file looks delimited "
                                 f"by {name}; predstore reads comma-separated CSV")
    return names


def _open(path: Path, fs: pafs.FileSystem | None) -> Any:
    """A binary file object for reading: of the local disk, or a stream from the object store."""
    return path.open("rb") if fs is None else fs.open_input_stream(str(path))


def _source(path: Path, fs: pafs.FileSystem | None) -> Any:
    """What pyarrow's CSV reader takes: the local path itself, or a stream from the store."""
    return path if fs is None else fs.open_input_stream(str(path))


def _shown(path: Path, fs: pafs.FileSystem | None) -> str:
    """How a file is named to a user: its local path, or its URI on the store."""
    return str(path) if fs is None else storage.uri_of(fs, str(path))


def count_rows(partition: Partition) -> int | None:
    """Rows in the partition when the format says so cheaply (Parquet metadata), else None."""
    if partition.format != "parquet":
        return None
    try:
        return sum(pq.read_metadata(str(f), filesystem=partition.filesystem).num_rows for f in partition.files)
    except (pa.ArrowException, OSError):
        return None


@dataclass(frozen=True)
class Slice:
    """Consecutive row groups of one Parquet file, or a whole CSV file: one task's share.

    Its row groups are also the units the run's digest is made of, so the digest does not depend
    on how a run was split among workers. ``filesystem`` (None: the local disk) travels with it
    to a worker process, which reads the store with its own credentials.
    """

    path: Path
    row_groups: tuple[int, ...]  # empty for a CSV file
    first_row: int  # number (from 1) of its first row in the partition
    rows: int | None
    filesystem: pafs.FileSystem | None = field(default=None, repr=False, compare=False)


def plan(partition: Partition, *, pieces: int = 1) -> list[Slice]:
    """Split the partition into about ``pieces`` slices of whole row groups (at least one per file)."""
    fs = partition.filesystem
    if partition.format == "csv":
        return [Slice(path=f, row_groups=(), first_row=1, rows=None, filesystem=fs) for f in partition.files]
    try:
        metadata = [(f, pq.read_metadata(str(f), filesystem=fs)) for f in partition.files]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{partition.root}: cannot be read as parquet ({first_line(exc)})") from exc
    groups = [(f, i, meta.row_group(i).num_rows) for f, meta in metadata for i in range(meta.num_row_groups)]
    total = sum(rows for _, _, rows in groups)
    target = max(1, -(-total // max(1, pieces)))
    slices: list[Slice] = []
    current: list[tuple[Path, int, int]] = []
    first = 1
    for group in groups:
        if current and (current[0][0] != group[0] or sum(r for _, _, r in current) >= target):
            slices.append(_slice(current, first, fs))
            first += slices[-1].rows or 0
            current = []
        current.append(group)
    if current:
        slices.append(_slice(current, first, fs))
    return slices


def _slice(groups: list[tuple[Path, int, int]], first: int, fs: pafs.FileSystem | None) -> Slice:
    return Slice(path=groups[0][0], row_groups=tuple(i for _, i, _ in groups), first_row=first,
                 rows=sum(r for _, _, r in groups), filesystem=fs)


def units(part: Slice, columns: Sequence[str], *, csv_bytes: bool = True) -> Iterator[Iterator[pa.RecordBatch]]:
    """The slice's row groups (a CSV file is one), each as a stream of record batches of
    ``columns``. Memory stays flat however large the file. CSV columns are read as bytes, so that
    a bad value (not a number, not UTF-8) becomes a rejected row instead of a failed read. Read
    errors become `InputError`. ``csv_bytes=False`` reads CSV columns as text (UTF-8 or an error)."""
    shown = _shown(part.path, part.filesystem)
    try:
        if not part.row_groups:
            # As bytes: a value that is not UTF-8 is then one rejected row, not a failed file.
            kind = pa.binary() if csv_bytes else pa.string()
            convert = pacsv.ConvertOptions(column_types={c: kind for c in columns},
                                           include_columns=list(columns), strings_can_be_null=True)
            with pacsv.open_csv(_source(part.path, part.filesystem),
                                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                convert_options=convert) as stream:
                yield _translated(stream, shown)
            return
        # pre_buffer would keep every column chunk read so far: memory would grow with the file.
        with pq.ParquetFile(str(part.path), filesystem=part.filesystem, pre_buffer=False) as parquet:
            missing = [c for c in columns if c not in parquet.schema_arrow.names]
            if missing:
                raise InputError(f"{shown}: lacks column(s) {', '.join(map(repr, missing))}, which the other "
                                 "files of the partition have")
            for group in part.row_groups:
                if part.filesystem is None:
                    # Decoding in this thread: Arrow's own pool would compete with the model's threads.
                    yield _translated(parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns),
                                                           row_groups=[group], use_threads=False), shown)
                    continue
                # On an object store, a request per page would cost a round trip each: the row group's
                # column chunks are fetched in a few coalesced reads instead (pre_buffer), by a reader
                # of its own, so that its buffers go with it and memory stays one row group.
                with pq.ParquetFile(str(part.path), filesystem=part.filesystem, metadata=parquet.metadata,
                                    pre_buffer=True) as group_reader:
                    yield _translated(group_reader.iter_batches(batch_size=BATCH_ROWS, columns=list(columns),
                                                                row_groups=[group], use_threads=False), shown)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{shown}: cannot be read ({_csv_problem(exc)})") from exc


def batches(partition: Partition, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Every record batch of ``columns`` in the partition, in order, in flat memory (CSV columns as text)."""
    for part in plan(partition):
        for unit in units(part, columns, csv_bytes=False):
            yield from unit


def _translated(stream: Iterable[pa.RecordBatch], shown: str) -> Iterator[pa.RecordBatch]:
    try:
        for batch in stream:
            faults.point("read")
            yield batch
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{shown}: could not be read to the end ({_csv_problem(exc)})") from exc


def _csv_problem(exc: BaseException) -> str:
    """pyarrow's message, said in a user's words where it is about a CSV's text or shape."""
    text = first_line(exc)
    if "invalid UTF8" in text:
        return "the file is not UTF-8 text; convert it, e.g. `iconv -f latin1 -t utf-8`"
    shape = re.search(r"Expected (\d+) columns, got (\d+): ?(.*)", text)
    if shape:
        expected, got, line = shape.groups()
        return f"a line has {got} fields where the header has {expected}: {line[:80]!r}"
    return text
