"""The prediction store: settings, errors, schema, connections, migrations and queries.

The only package that writes SQL. Its functions take a psycopg connection and never commit:
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
