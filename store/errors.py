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


class RunNotRunning(PredstoreError):
    """A ledger transition found the run no longer `running` (another process marked it first)."""

    exit_code = 1

    def __init__(self, run_id: int, status: str | None) -> None:
        now = f" (it is {status})" if status else ""
        super().__init__(f"run {run_id} is no longer running{now}, so it was left as the ledger has it; "
                         f"see `predstore runs show {run_id}`")
        self.run_id = run_id
        self.status = status
