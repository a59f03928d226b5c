"""The prediction store: settings, errors, schema, connections, migrations and queries; and the
plumbing every job shares (object storage, the partition reader, fault points, the Prometheus export).

The only package that writes SQL. Its query functions take a psycopg connection and never commit:
the caller owns the transaction.
"""

from store.errors import (
    ConfigError,
    InputError,
    ModelError,
    NotFound,
    PredstoreError,
    RunFailed,
    SchemaOutdated,
    StoreUnavailable,
)
from store.settings import Settings

__all__ = [
    "ConfigError",
    "InputError",
    "ModelError",
    "NotFound",
    "PredstoreError",
    "RunFailed",
    "SchemaOutdated",
    "Settings",
    "StoreUnavailable",
]
