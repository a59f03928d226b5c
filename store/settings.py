"""One typed settings object, built from the environment at each entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from store.errors import ConfigError

#: PREDSTORE_LOG_LEVEL's values, the default first.
LOG_LEVELS = ("info", "debug", "warning", "error", "critical")
#: PREDSTORE_LOG_FORMAT's values, the default first.
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    """Everything predstore reads from its environment.

    ``database_url`` None means the embedded PostgreSQL under ``home / "pgdata"``.
    """

    home: Path = field(default_factory=lambda: Path(".predstore"))
    database_url: str | None = None
    keep_runs: int = 3
    #: Days a published run is kept before retention drops it, for models without a policy of their
    #: own (`predstore models retain`); None keeps them for ever.
    keep_days: int | None = None
    api_max_batch: int = 1000
    api_reader_url: str | None = None
    #: The console's (`predstore ui`) database URL: the console role of `predstore db grant`. None:
    #: the store's own URL, every transaction read-only.
    ui_database_url: str | None = None
    #: Maximum prediction age in seconds per model; ``"*"`` applies to every other model. Empty: no limit.
    api_max_age: tuple[tuple[str, int], ...] = ()
    #: What the API does with a prediction older than its maximum age: ``flag`` it or ``hide`` it (404).
    api_stale_policy: str = "flag"
    #: Refuse /v1 requests without a valid key, even before the first key is created. False (for
    #: local development only) leaves the API open until the first key exists.
    api_require_key: bool = True
    #: Seconds a request waits for a pooled connection before answering 503.
    api_pool_timeout: float = 2.0
    api_pool_size: int = 4
    #: Predictions cached per process (0 turns the cache off).
    api_cache_size: int = 100_000
    #: Score rows live (``/v1/models/{name}/score``, and a batch lookup's misses when asked); off, the
    #: service answers those 404 and never loads a model.
    api_live_scoring: bool = False
    #: Live predictions waiting to be written to the store, per process: more are dropped (and counted).
    api_live_queue: int = 100_000
    #: A node_exporter textfile-collector folder: jobs write their latest figures there as .prom files.
    metrics_dir: Path | None = None
    #: A Prometheus Pushgateway URL: jobs push their figures there.
    pushgateway_url: str | None = None
    #: Where model artifacts are stored: a folder, or an object-store URI such as ``s3://bucket/prefix``.
    #: None: ``home / "artifacts"``.
    artifacts: str | None = None
    #: The lowest level logged (`LOG_LEVELS`), for predstore and the libraries it runs.
    log_level: str = "info"
    #: ``text`` lines, or ``json``: one object per line (`store.logs`).
    log_format: str = "text"

    @property
    def artifacts_dir(self) -> Path | str:
        """The artifact store: a local folder, or an object-store URI (kept as text)."""
        if self.artifacts is None:
            return self.home / "artifacts"
        if "://" in self.artifacts and not self.artifacts.lower().startswith("file://"):
            return self.artifacts.rstrip("/")
        return Path(self.artifacts.removeprefix("file://")).expanduser()

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
            keep_days=_int(raw_days, "PREDSTORE_KEEP_DAYS", default=0, minimum=1)
            if (raw_days := get("PREDSTORE_KEEP_DAYS")) else None,
            api_max_batch=_int(get("PREDSTORE_API_MAX_BATCH"), "PREDSTORE_API_MAX_BATCH", default=1000, minimum=1),
            api_reader_url=get("PREDSTORE_API_DATABASE_URL"),
            ui_database_url=get("PREDSTORE_UI_DATABASE_URL"),
            api_max_age=_max_age(get("PREDSTORE_API_MAX_AGE")),
            api_stale_policy=_choice(get("PREDSTORE_API_STALE_POLICY"), "PREDSTORE_API_STALE_POLICY",
                                     ("flag", "hide")),
            api_require_key=_bool(get("PREDSTORE_API_REQUIRE_KEY"), "PREDSTORE_API_REQUIRE_KEY", default=True),
            api_pool_timeout=_float(get("PREDSTORE_API_POOL_TIMEOUT"), "PREDSTORE_API_POOL_TIMEOUT", default=2.0),
            api_pool_size=_int(get("PREDSTORE_API_POOL_SIZE"), "PREDSTORE_API_POOL_SIZE", default=4, minimum=1),
            api_cache_size=_int(get("PREDSTORE_API_CACHE_SIZE"), "PREDSTORE_API_CACHE_SIZE", default=100_000,
                                minimum=0),
            api_live_scoring=_bool(get("PREDSTORE_API_LIVE_SCORING"), "PREDSTORE_API_LIVE_SCORING", default=False),
            api_live_queue=_int(get("PREDSTORE_API_LIVE_QUEUE"), "PREDSTORE_API_LIVE_QUEUE", default=100_000,
                                minimum=1),
            metrics_dir=Path(raw_dir) if (raw_dir := get("PREDSTORE_METRICS_DIR")) else None,
            pushgateway_url=get("PREDSTORE_PUSHGATEWAY_URL"),
            artifacts=get("PREDSTORE_ARTIFACTS"),
            log_level=_choice(get("PREDSTORE_LOG_LEVEL"), "PREDSTORE_LOG_LEVEL", LOG_LEVELS),
            log_format=_choice(get("PREDSTORE_LOG_FORMAT"), "PREDSTORE_LOG_FORMAT", LOG_FORMATS),
        )

    def max_age(self, model: str) -> int | None:
        """The maximum age in seconds of ``model``'s predictions, or None for no limit."""
        default = None
        for name, seconds in self.api_max_age:
            if name == model:
                return seconds
            if name == "*":
                default = seconds
        return default


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


def _max_age(raw: str | None) -> tuple[tuple[str, int], ...]:
    """``"86400"`` (every model) or ``"*=86400,churn=3600"`` (per model, ``*`` for the rest)."""
    if raw is None:
        return ()
    hint = "write PREDSTORE_API_MAX_AGE as SECONDS or MODEL=SECONDS,...,*=SECONDS"
    pairs = []
    for item in raw.split(","):
        name, sep, seconds = item.strip().rpartition("=")
        name = name.strip() if sep else "*"
        if not name or not seconds.strip().isdigit() or int(seconds) < 1:
            raise ConfigError(f"PREDSTORE_API_MAX_AGE={raw!r}: {item.strip()!r} is not a positive age; {hint}")
        pairs.append((name, int(seconds)))
    return tuple(pairs)


def _choice(raw: str | None, name: str, choices: tuple[str, ...]) -> str:
    if raw is None:
        return choices[0]
    if raw.lower() not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw.lower()


def _bool(raw: str | None, name: str, *, default: bool = False) -> bool:
    if raw is None:
        return default
    value = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}.get(raw.lower())
    if value is None:
        raise ConfigError(f"{name}={raw!r} is not a boolean; set it to true or false")
    return value


def _float(raw: str | None, name: str, *, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 < value <= 60:
        raise ConfigError(f"{name}={value} is out of range; set it between 0 and 60 seconds")
    return value
