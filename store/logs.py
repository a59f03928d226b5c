"""Logging for every predstore process: the CLI, the scheduler and the lookup API's servers.

One configuration, from `Settings.log_level` and `Settings.log_format`: every line goes to stderr
with its time and level, as text or as one JSON object per line. predstore's own loggers all live
under ``predstore.`` (`logger`); the few noisy libraries are quieted as before, and other
libraries' lines get the same format. gunicorn and granian take the same configuration as a
`logging.config.dictConfig` dictionary (`dict_config`), so their own lines match the service's.

A JSON line carries ``run_id``, ``model``, ``partition`` and ``job_id`` when they are known: passed
with ``extra={...}`` on one call, or set for a block of work with `context`. No line shows a
password: every message goes through `store.errors.mask_secrets`.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from store.errors import mask_secrets
from store.settings import Settings

__all__ = ["FIELDS", "JsonFormatter", "TextFormatter", "configure", "context", "dict_config", "json_configured",
           "logger", "say"]

#: What a JSON line carries about the work in hand, when known.
FIELDS = ("run_id", "model", "partition", "job_id")
#: Libraries whose chatter below this level is hidden (``-v`` shows psycopg's too).
QUIET = {"pgserver": "WARNING", "alembic": "WARNING", "urllib3": "WARNING",
         # psycopg warns only of errors it ignored while cleaning up after one (a COPY it could not
         # end on a lost connection), which the command reports itself, in one line.
         "psycopg": "ERROR"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SAY_PREFIX = {logging.ERROR: "predstore: error: ", logging.WARNING: "warning: "}

_context: ContextVar[dict[str, Any] | None] = ContextVar("predstore_log_context", default=None)


def logger(name: str) -> logging.Logger:
    """The logger of a predstore module: ``logger("batch.runner")`` is ``predstore.batch.runner``."""
    return logging.getLogger(f"predstore.{name}")


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Within the block (and its thread), JSON lines carry ``fields`` (`FIELDS`; None ones are left out)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, passwords masked."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the `FIELDS` that
    are known, and the exception's traceback, if any, as one string; passwords masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        known = _context.get() or {}
        for name in FIELDS:
            value = getattr(record, name, known.get(name))
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when a line is written, not as it was when configured
    (click's test runner and pytest swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def dict_config(settings: Settings, *, verbose: bool = False, servers: bool = False) -> dict[str, Any]:
    """The `logging.config.dictConfig` dictionary for ``settings``; ``verbose`` logs debug detail,
    ``servers`` adds gunicorn's and granian's own loggers (their dictionaries replace the defaults)."""
    level = "DEBUG" if verbose else settings.log_level.upper()
    formatter = {"()": f"store.logs.{'Json' if settings.log_format == 'json' else 'Text'}Formatter"}
    loggers: dict[str, Any] = {name: {"level": "DEBUG" if verbose and name == "psycopg" else quiet}
                               for name, quiet in QUIET.items()}
    if servers:
        for name in ("gunicorn.error", "gunicorn.access", "_granian", "granian.access"):
            loggers[name] = {"level": level, "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"predstore": formatter},
        "handlers": {"stderr": {"()": "store.logs.StderrHandler", "formatter": "predstore"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def configure(settings: Settings, *, verbose: bool = False) -> None:
    """Configure logging for this process, unless something else already did (a program that
    embeds predstore, or pytest), as `logging.basicConfig` would."""
    root = logging.getLogger()
    if any(not isinstance(handler, StderrHandler) for handler in root.handlers):
        return
    logging.config.dictConfig(dict_config(settings, verbose=verbose))


def json_configured() -> bool:
    """Whether this process logs JSON lines."""
    return any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)


def say(message: str, *, level: int = logging.INFO, name: str = "cli") -> None:
    """A line on stderr for whoever runs a command ("predstore: error: ..." for an error,
    "warning: ..." for a warning), or where the process logs JSON, a JSON line of the logger
    ``predstore.NAME``, so that a log collector can read every line."""
    if json_configured():
        logger(name).log(level, message)
    else:
        print(mask_secrets(_SAY_PREFIX.get(level, "") + message), file=sys.stderr, flush=True)
