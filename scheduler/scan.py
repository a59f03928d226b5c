"""Finding the partitions under a job's input location, and fingerprinting only what changed."""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

from batch import reader
from store.errors import PredstoreError

log = logging.getLogger(__name__)

#: Files and folders a scan passes over: hidden or underscore names are writes in progress
#: (write to ``.name`` or ``_name``, then rename into place) or markers such as ``_SUCCESS``.
_IN_PROGRESS = (".", "_")



@dataclass(frozen=True)
class Found:
    """A partition found by a scan: where it is, its key and its content fingerprint."""

    path: Path
    key: str
    fingerprint: str


#: path -> (stat signature, what was found there), so that an unchanged partition is not read again.
Cache = dict[Path, tuple[tuple[tuple[str, int, int], ...], Found]]


def scan(pattern: str, cache: Cache) -> list[Found]:
    """Every readable partition matching ``pattern`` (a file or a folder each), in name order.

    A match that cannot be opened yet (an empty folder, a file of unknown type) is passed over
    with a debug line; two matches with the same key keep the first and log a warning.
    """
    found: dict[str, Found] = {}
    paths = [Path(name) for name in sorted(glob.glob(pattern, recursive=True))]
    for gone in set(cache) - set(paths):
        del cache[gone]
    for path in paths:
        if path.name.startswith(_IN_PROGRESS):
            continue
        partition = _open(path, cache)
        if partition is None:
            continue
        if partition.key in found:
            log.warning("%s and %s are both partition %r; scoring only the first (rename one)",
                        found[partition.key].path, path, partition.key)
            continue
        found[partition.key] = partition
    return list(found.values())


def _open(path: Path, cache: Cache) -> Found | None:
    try:
        signature = _signature(path)
        cached = cache.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        partition = reader.open_partition(path)
        opened = Found(path=path, key=partition.key, fingerprint=partition.fingerprint)
    except (OSError, PredstoreError) as exc:
        log.debug("passing over %s for now: %s", path, exc)
        cache.pop(path, None)
        return None
    cache[path] = (signature, opened)
    return opened


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of each file: changes whenever the content may have."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    stats = []
    for f in sorted(files):
        st = f.stat()
        stats.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(stats)
