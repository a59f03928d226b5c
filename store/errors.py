"""The predstore error tree.

Every error a user can cause or meet derives from `PredstoreError`. Foreign errors (psycopg,
SQLAlchemy, OS, pyarrow) are translated once, where they are met, with ``raise ... from exc``.
The CLI shows ``str(error)`` as one line and exits with ``error.exit_code``; the lookup API's
error handler turns them into JSON.
"""

from __future__ import annotations


class PredstoreError(Exception):
    """Base of every error predstore shows to a user."""

    exit_code = 1


class ConfigError(PredstoreError):
    """A setting, flag or path given by the user is wrong."""

    exit_code = 2


class StoreUnavailable(PredstoreError):
    """The database cannot be reached or the embedded server cannot start."""

    exit_code = 2


class SchemaOutdated(PredstoreError):
    """The database is not at the migration revision this code expects."""

    exit_code = 2


class NotFound(PredstoreError):
    """A named model, version or run does not exist."""

    exit_code = 2


class ModelError(PredstoreError):
    """A model artifact is unreadable, changed since registration, or failed to predict."""

    exit_code = 1


class InputError(PredstoreError):
    """An input partition cannot be used (missing columns, unreadable, too many bad rows)."""

    exit_code = 1


class RunFailed(PredstoreError):
    """A scoring run failed; nothing was published."""

    exit_code = 1
