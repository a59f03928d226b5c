"""Translating database errors met mid-job into the predstore error tree, once, at the job's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from store.errors import PredstoreError, first_line, from_database, mask_secrets


@contextmanager
def store_errors(what: str, *, conninfo: str) -> Iterator[None]:
    """Re-raise psycopg errors inside the block as one-line `PredstoreError`s saying ``what`` failed:
    a lost connection to ``conninfo`` as ``database unavailable: ...`` (`ConnectionLost`, exit 1)."""
    try:
        yield
    except psycopg.OperationalError as exc:
        error = from_database(exc, conninfo=conninfo, connecting=False)
        raise type(error)(f"{what}: {error}") from exc
    except psycopg.Error as exc:
        raise PredstoreError(f"{what}: the database refused it ({mask_secrets(first_line(exc), conninfo)})") from exc
