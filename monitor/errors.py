"""Translating database errors met mid-job into the predstore error tree, once, at the job's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from store.errors import PredstoreError, StoreUnavailable


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Re-raise psycopg errors inside the block as one-line `PredstoreError`s saying ``what`` failed."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"{what}: lost the connection to PostgreSQL ({_first_line(exc)})") from exc
    except psycopg.Error as exc:
        raise PredstoreError(f"{what}: the database refused it ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
