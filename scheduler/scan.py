"""Finding the partitions under a job's input location, and fingerprinting only what changed.

A location is a local glob or an object-store URI with a glob (``s3://bucket/incoming/dt=*``).
Either way a scan lists, and opens only what its listing shows new or changed: on an object
store a partition already seen is never read again, and a new one is fingerprinted from the
store's ETags where it gives them, so even a restarted scheduler downloads nothing it scored.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from pyarrow import fs as pafs

from store import reader, storage
from store.errors import PredstoreError

log = logging.getLogger("predstore.scheduler.scan")

#: Files and folders a scan passes over: hidden or underscore names are writes in progress
#: (write to ``.name`` or ``_name``, then rename into place) or markers such as ``_SUCCESS``.
_IN_PROGRESS = (".", "_")

#: A partition's signature: name, size and modification time of each of its files.
Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Found:
    """A partition found by a scan: where it is (a path, or a URI), its key and its content fingerprint."""

    path: Path | str
    key: str
    fingerprint: str


#: location -> (signature, what was found there), so that an unchanged partition is not read again.
Cache = dict[Path | str, tuple[Signature, Found]]


def scan(pattern: str, cache: Cache) -> list[Found]:
    """Every readable partition matching ``pattern`` (a file or a folder each), in name order.

    A match that cannot be opened yet (an empty folder, a file of unknown type) is passed over
    with a debug line; two matches with the same key keep the first and log a warning. A store
    that cannot be listed (missing bucket, access denied) raises its `PredstoreError`.
    """
    matches = _remote_matches(pattern) if storage.is_remote(pattern) else _local_matches(pattern)
    found: dict[str, Found] = {}
    for gone in set(cache) - set(matches):
        del cache[gone]
    for where, signature in matches.items():
        if storage.basename(where).startswith(_IN_PROGRESS):
            continue
        partition = _open(where, signature, cache)
        if partition is None:
            continue
        if partition.key in found:
            log.warning("%s and %s are both partition %r; scoring only the first (rename one)",
                        found[partition.key].path, where, partition.key)
            continue
        found[partition.key] = partition
    return list(found.values())


def _local_matches(pattern: str) -> dict[Path | str, Signature | None]:
    return {Path(name): None for name in sorted(glob.glob(pattern, recursive=True))}


def _remote_matches(pattern: str) -> dict[Path | str, Signature | None]:
    """The objects and folders matching ``pattern``, each with its signature, from one listing of
    the pattern's fixed prefix (``*`` and ``?`` match within one level, as in a local glob)."""
    fs, path = storage.filesystem(pattern)
    parts = path.split("/")
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    base = "/".join(parts[:fixed])
    scheme = pattern[:len(pattern) - len(path)] if pattern.endswith(path) else storage.uri_of(fs, "")
    if fixed == len(parts):  # no glob: the location itself is the one partition
        entry = storage.info(fs, path, shown=pattern)
        if entry.type == pafs.FileType.NotFound:
            raise storage.missing(fs, path, shown=pattern)
        listed = [entry] + (storage.listing(fs, path, shown=pattern) if entry.type == pafs.FileType.Directory else [])
        return {scheme + path: _signature(path, listed)}
    listed = storage.listing(fs, base, shown=scheme + base)
    if not listed and storage.info(fs, base, shown=scheme + base).type == pafs.FileType.NotFound:
        raise storage.missing(fs, base, shown=scheme + base)
    depth = len(parts)
    matches = sorted({"/".join(names) for entry in listed if len(names := entry.path.split("/")[:depth]) == depth
                      and all(fnmatchcase(name, want) for name, want in zip(names, parts, strict=True))})
    return {scheme + match: _signature(match, listed) for match in matches}


def _signature(path: str, listed: list[pafs.FileInfo]) -> Signature:
    """Name, size and modification time of each file at or under ``path``, from a listing."""
    return tuple(sorted((f.path, f.size or 0, f.mtime_ns or 0) for f in listed
                        if f.type == pafs.FileType.File and (f.path == path or f.path.startswith(path + "/"))))


def _open(where: Path | str, signature: Signature | None, cache: Cache) -> Found | None:
    try:
        if signature is None:
            assert isinstance(where, Path)
            signature = _local_signature(where)
        cached = cache.get(where)
        if cached and cached[0] == signature:
            return cached[1]
        partition = reader.open_partition(where)
        opened = Found(path=where, key=partition.key, fingerprint=partition.fingerprint)
    except (OSError, PredstoreError) as exc:
        log.debug("passing over %s for now: %s", where, exc)
        cache.pop(where, None)
        return None
    cache[where] = (signature, opened)
    return opened


def _local_signature(path: Path) -> Signature:
    """Name, size and modification time of each file: changes whenever the content may have."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    stats = []
    for f in sorted(files):
        st = f.stat()
        stats.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(stats)
