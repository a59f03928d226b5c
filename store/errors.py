"""The predstore error tree.

Every error a user can cause or meet derives from `PredstoreError`. Foreign errors (psycopg,
SQLAlchemy, OS, pyarrow) are translated once, where they are met, with ``raise ... from exc``.
Three tables map the tree to what its reader sees, each in one place: the CLI's exit codes
(`store.cli.EXIT_CODES`), the lookup API's HTTP statuses (`lookup_api.errors.STATUS`) and the
scheduler's firing outcomes (`scheduler.jobs.OUTCOMES`).

Database errors are translated by `from_database`, the one place that also keeps secrets out of
messages: a connection string is only ever shown by `describe_target`, and `mask_secrets` blanks
any password that libpq echoes back (it quotes a malformed URL whole).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

#: What a password looks like inside a message: ``password=...`` (a keyword DSN or a URL's query)
#: and ``user:password@``, after a scheme and any number of slashes or none (a URL's userinfo, malformed
#: or not).
_PASSWORDS = re.compile(r"(?P<key>password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&'\"]+)", re.IGNORECASE)
#: A URL's ``scheme:/user:`` before a password and its ``@``, matched within one word of a message
#: that holds an ``@`` (`_WORD`): a message may quote a megabyte of user input, and this pattern,
#: tried at every position of it, would take time quadratic in its length.
_URL_PASSWORD = re.compile(r"(?P<userinfo>(?:[a-z][a-z0-9+.-]*:/*)?[^:/@\s'\"]*:)(?!/)[^@\s'\"]*(?=@)", re.IGNORECASE)
_WORD = re.compile(r"[^\s'\"]*@[^\s'\"]*")
#: The longest word whose userinfo is matched exactly; a longer one is masked from its first ``:``
#: to its last ``@``.
_LONGEST_WORD = 4096
#: A connection string's userinfo, up to its last ``@`` (a password may hold one), with or without
#: a scheme; and a keyword DSN's ``password=`` to the end of the string.
_USERINFO = re.compile(r"^(?P<keep>(?:[a-z][a-z0-9+.-]*:/*)?[^:/@\s]*:).*@", re.IGNORECASE | re.DOTALL)
_KEYWORD = re.compile(r"(?P<keep>password\s*=).*", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r'"([^"]+)"')
MASK = "***"
T = TypeVar("T")


class PredstoreError(Exception):
    """Base of every error predstore shows to a user."""


class ConfigError(PredstoreError):
    """A setting, flag or path given by the user is wrong."""


class StoreUnavailable(PredstoreError):
    """The database cannot be reached or the embedded server cannot start."""


class ConnectionLost(StoreUnavailable):
    """The database went away in the middle of a job, which failed (exit 1) and is run again once
    it is back."""


class SchemaOutdated(PredstoreError):
    """The database is not at the migration revision this code expects."""


class NotFound(PredstoreError):
    """A named model, version or run does not exist."""


class ModelError(PredstoreError):
    """A model artifact is unreadable, changed since registration, or failed to predict."""


class UnsupportedModel(ModelError):
    """A model of a kind predstore cannot score: an MLflow flavour other than scikit-learn's."""


class InputError(PredstoreError):
    """An input partition cannot be used (missing columns, unreadable, too many bad rows)."""


class RunFailed(PredstoreError):
    """A scoring run failed; nothing was published. ``result`` is the run's `batch.runner.RunResult`
    (counts, status, message), for a caller that reports failed runs beside the others."""

    def __init__(self, message: str, *, run_id: int | None = None, result: Any = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.result = result


class RunHeld(RunFailed):
    """A run failed the publish gate: it is ``held``, nothing of it served, until `predstore runs
    release` publishes it or `predstore runs discard` drops it."""


class RunInProgress(PredstoreError):
    """Another live process is running the same (model, partition)."""

    def __init__(self, run_id: int, model_name: str, partition_key: str) -> None:
        super().__init__(
            f"run {run_id} is already scoring partition {partition_key!r} for model {model_name!r}; "
            "wait for it to finish"
        )
        self.run_id = run_id


class RunNotRunning(PredstoreError):
    """A ledger transition found the run no longer `running` (another process marked it first)."""

    def __init__(self, run_id: int, status: str | None) -> None:
        now = f" (it is {status})" if status else ""
        super().__init__(f"run {run_id} is no longer running{now}, so it was left as the ledger has it; "
                         f"see `predstore runs show {run_id}`")
        self.run_id = run_id
        self.status = status


class MonitorFailed(PredstoreError):
    """A `predstore monitor` run could not finish (the database is unreachable or went away...): its
    own exit status (6), apart from an alert's (1), for a wrapper that pages on alerts only."""


class JobError(PredstoreError):
    """A scheduled job could not run at all (its model is gone, the monitor is not installed...)."""


class JobsFailed(PredstoreError):
    """A ``--once`` pass of the scheduler ran jobs that failed after their retries."""


def nearest(table: Mapping[type[PredstoreError], T], exc: PredstoreError) -> T | None:
    """``table``'s entry for the nearest class of ``exc`` it names (None if it names none): how the
    CLI's, the API's and the scheduler's tables are read."""
    return next((table[cls] for cls in type(exc).__mro__ if cls in table), None)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name if it has none): what a one-line error quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def mask_secrets(text: str, conninfo: str | None = None) -> str:
    """``text`` with every password in it replaced by ``***``: ``conninfo``'s own wherever it
    appears, and whatever a URL's userinfo or a ``password=`` holds."""
    if conninfo:
        password = _params(conninfo).get("password")
        if password:
            text = text.replace(password, MASK)
        text = text.replace(conninfo, _mask_conninfo(conninfo))
        secret = _secret_part(conninfo)
        if secret:  # libpq quotes the piece of a malformed string it stopped at: maybe the password's tail
            text = _QUOTED.sub(lambda m: f'"{MASK}"' if m.group(1) in secret else m.group(0), text)
    text = _PASSWORDS.sub(lambda m: m.group("key") + MASK, text)
    return _WORD.sub(lambda m: _mask_word(m.group(0)), text) if "@" in text else text


def _mask_word(word: str) -> str:
    """One word of a message holding an ``@``, any URL password in it masked."""
    if len(word) <= _LONGEST_WORD:
        return _URL_PASSWORD.sub(lambda m: m.group("userinfo") + MASK, word)
    colon, at = word.find(":"), word.rfind("@")
    return word[:colon + 1] + MASK + word[at:] if 0 <= colon < at else word


def describe_target(conninfo: str) -> str:
    """Where a connection string (a URL or a keyword DSN) points, as ``user@host:port/dbname``;
    never its password, and nothing of a string libpq cannot parse."""
    params = _params(conninfo)
    if not params:
        return "an unparseable connection string (not shown: it may hold a password)"
    # A malformed URL can land a password in any of these (``postgresql:///u:pw@h/db`` is a dbname).
    host = _mask_conninfo(params.get("host") or params.get("hostaddr") or "local socket")
    user = f"{_mask_conninfo(params['user'])}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    dbname = f"/{_mask_conninfo(params['dbname'])}" if params.get("dbname") else ""
    return f"{user}{host}{port}{dbname}"


def from_database(exc: psycopg.Error, *, conninfo: str, connecting: bool = True) -> PredstoreError:
    """The predstore error for a database error met connecting to ``conninfo`` (or, with
    ``connecting=False``, using a connection to it): one line, no password."""
    first = mask_secrets(first_line(exc), conninfo)
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:  # libpq refused the string
        return ConfigError(f"PREDSTORE_DATABASE_URL is not a valid PostgreSQL URL ({first}); "
                           "write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate[:2] == "08"
                                                      or exc.sqlstate in ("57P01", "57P02", "57P03")):
        if not connecting:
            return ConnectionLost(f"database unavailable: lost the connection to PostgreSQL at "
                                    f"{describe_target(conninfo)}: {first}")
        return StoreUnavailable(f"database unavailable: cannot connect to PostgreSQL at {describe_target(conninfo)}: "
                                f"{first}; check that the server is running and PREDSTORE_DATABASE_URL is right")
    return PredstoreError(f"database error: {first}")


def _mask_conninfo(conninfo: str) -> str:
    """``conninfo`` with everything that could be its password blanked, whether or not libpq can
    parse it: a URL's userinfo past the user name, or a keyword DSN from ``password=`` on."""
    masked = _USERINFO.sub(lambda m: m.group("keep") + MASK + "@", conninfo, count=1)
    return _KEYWORD.sub(lambda m: m.group("keep") + MASK, masked, count=1)


def _secret_part(conninfo: str) -> str:
    """The part of ``conninfo`` that `_mask_conninfo` blanks ("" if none)."""
    if match := _USERINFO.match(conninfo):
        return match.group(0)[len(match.group("keep")):-1]
    match = _KEYWORD.search(conninfo)
    return match.group(0)[len(match.group("keep")):] if match else ""


def _params(conninfo: str | None) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo or "").items()}
    except psycopg.ProgrammingError:
        return {}
