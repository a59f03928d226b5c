"""One typed settings object, built from the environment at each entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from store.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Everything predstore reads from its environment.

    ``database_url`` None means the embedded PostgreSQL under ``home / "pgdata"``.
    """

    home: Path = field(default_factory=lambda: Path(".predstore"))
    database_url: str | None = None
    keep_runs: int = 3
    api_max_batch: int = 1000
    api_reader_url: str | None = None

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``PREDSTORE_*`` variables; an empty variable counts as unset."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            home=Path(get("PREDSTORE_HOME") or ".predstore").expanduser(),
            database_url=get("PREDSTORE_DATABASE_URL"),
            keep_runs=_int(get("PREDSTORE_KEEP_RUNS"), "PREDSTORE_KEEP_RUNS", default=3, minimum=1),
            api_max_batch=_int(get("PREDSTORE_API_MAX_BATCH"), "PREDSTORE_API_MAX_BATCH", default=1000, minimum=1),
            api_reader_url=get("PREDSTORE_API_DATABASE_URL"),
        )


def _int(raw: str | None, name: str, *, default: int, minimum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to an integer >= {minimum}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is too small; set it to an integer >= {minimum}")
    return value
