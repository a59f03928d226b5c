"""The schedule file: TOML parsed and checked into frozen dataclasses, or refused with one line.

Every error names the file, the key and the reason, so a bad config is fixed in one look and
nothing starts until it is right.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from apscheduler.triggers.cron import CronTrigger

from store import registry
from store.errors import ConfigError, NotFound

DEFAULT_MISFIRE_GRACE_S = 300
DEFAULT_POLL_INTERVAL_S = 30.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 30.0

SCHEDULER_KEYS = {"misfire_grace_time"}
COMMON_KEYS = {"kind", "model", "cron", "timezone", "retries", "backoff", "on_alert"}
KEYS = {
    "score": COMMON_KEYS | {"input", "on_arrival", "poll_interval", "entity_col", "max_reject_fraction", "snapshot",
              "gate", "max_row_change"},
    "monitor": COMMON_KEYS,
    "retrain": COMMON_KEYS | {"train", "command", "after", "every_labels", "validation_share", "promote",
                              "retire_after_days", "timeout", "min_labels", "window_days"},
}
#: What a retrain job's ``on_alert`` may list: alert kinds, and ``performance`` for any performance alert.
RETRAIN_TRIGGERS = {"data_drift", "prediction_drift", "gradual_drift", "concept_drift", "estimated_performance",
                    "performance"}
#: Builds the error for a key and a reason.
Fail = Callable[[str, str], ConfigError]

#: Crontab's day-of-week numbering: 0 (and 7) is Sunday.
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class Job:
    """One scheduled job. A score job has ``input`` and either ``cron`` or ``on_arrival``;
    a monitor job has ``cron``. Times are in seconds."""

    id: str
    kind: str
    model: str
    cron: str | None = None
    timezone: str | None = None
    input: str | None = None
    on_arrival: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL_S
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF_S
    on_alert: str | None = None
    entity_col: str | None = None
    max_reject_fraction: float = 0.05
    #: Each run is the model's whole served set (a full refresh): entities it lacks stop being served.
    snapshot: bool = False
    #: Pass the publish gate (None: the model's policy) and its row-count limit.
    gate: bool | None = None
    max_row_change: float | None = None
    #: A retrain job: ``module:function`` fitting ``fit(frame, target)``; the alert kinds that fire it
    #: (after ``after`` of them); the newest share held out; ``if-better`` or ``manual``; the days a
    #: challenger may wait for a verdict; the fit's time limit; labeled entities a verdict needs.
    train: str | None = None
    #: Or a shell command that fits: it reads $PREDSTORE_TRAINING_SET and prints a .skops path last.
    command: str | None = None
    alert_kinds: tuple[str, ...] = ()
    after: int = 1
    #: Fire (data-driven) once this many labels arrived since the job's last firing; 0: never.
    every_labels: int = 0
    #: Train on the labels of the last this many days (0: since the current version was registered).
    window_days: float = 0.0
    validation_share: float = 0.2
    promote: str = "if-better"
    retire_after_days: float = 14.0
    timeout: float = 3600.0
    min_labels: int = 100

    def trigger(self) -> CronTrigger:
        """The cron trigger of a cron job, in its time zone."""
        assert self.cron and self.timezone, self
        return cron_trigger(self.cron, ZoneInfo(self.timezone))

    def describe(self) -> str:
        """The schedule in words, for logs and `predstore jobs`."""
        if self.on_arrival:
            return f"on arrival in {self.input} (poll every {self.poll_interval:g}s)"
        events = [f"on alerts {', '.join(self.alert_kinds)}"] if self.alert_kinds else []
        events += [f"every {self.every_labels} labels"] if self.every_labels else []
        if self.cron is not None:
            events.insert(0, f"cron {self.cron!r} {self.timezone}")
        return " and ".join(events)


@dataclass(frozen=True)
class ScheduleConfig:
    """A checked schedule file: where it is (for relative paths and messages) and its jobs."""

    path: Path
    jobs: tuple[Job, ...]
    misfire_grace_time: int = DEFAULT_MISFIRE_GRACE_S

    def job(self, job_id: str) -> Job:
        return next(j for j in self.jobs if j.id == job_id)


def load_config(path: Path) -> ScheduleConfig:
    """Read and check ``path``; raise `ConfigError` ("FILE: KEY: reason") on the first problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; see schedule.example.toml for the format") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, path=path)


def parse_config(raw: dict[str, Any], *, path: Path) -> ScheduleConfig:
    """Check a parsed TOML document; relative input locations are relative to ``path``'s folder."""

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {reason}")

    _unknown(raw, {"scheduler", "jobs"}, "", fail)
    scheduler = _table(raw.get("scheduler", {}), "scheduler", fail)
    _unknown(scheduler, SCHEDULER_KEYS, "scheduler.", fail)
    grace = _number(scheduler, "misfire_grace_time", "scheduler.", fail, default=DEFAULT_MISFIRE_GRACE_S,
                    minimum=1, integer=True)
    jobs_table = _table(raw.get("jobs"), "jobs", fail, required=True)
    if not jobs_table:
        raise fail("jobs", "no jobs are declared; add a [jobs.NAME] table")
    jobs = tuple(_job(job_id, _table(spec, f"jobs.{job_id}", fail), path.parent, fail)
                 for job_id, spec in jobs_table.items())
    return ScheduleConfig(path=path, jobs=jobs, misfire_grace_time=int(grace))


def check_models(config: ScheduleConfig, conn: psycopg.Connection) -> None:
    """Refuse a config naming a model that is not registered (or has no current version)."""
    for job in config.jobs:
        try:
            registry.get_model(conn, job.model)
        except NotFound as exc:
            raise ConfigError(f"{config.path}: jobs.{job.id}.model: {exc}") from None


def _job(job_id: str, spec: dict[str, Any], base: Path, fail: Fail) -> Job:
    where = f"jobs.{job_id}."
    if not job_id or not set(job_id) <= _ID_CHARS:
        raise fail(f"jobs.{job_id}", "a job name may hold only letters, digits, '_', '.' and '-'")
    kind = spec.get("kind")
    if kind not in KEYS:
        raise fail(where + "kind", f"{kind!r} is not a job kind; use \"score\", \"monitor\" or \"retrain\""
                   if kind is not None else "missing; use \"score\", \"monitor\" or \"retrain\"")
    _unknown(spec, KEYS[kind], where, fail)
    values: dict[str, Any] = {
        "id": job_id,
        "kind": kind,
        "model": _text(spec, "model", where, fail, required=True),
        "retries": int(_number(spec, "retries", where, fail, default=DEFAULT_RETRIES, minimum=0, integer=True)),
        "backoff": float(_number(spec, "backoff", where, fail, default=DEFAULT_BACKOFF_S, minimum=0)),
        "on_alert": _text(spec, "on_alert", where, fail) if kind != "retrain" else None,
    }
    on_arrival = spec.get("on_arrival", False)
    if not isinstance(on_arrival, bool):
        raise fail(where + "on_arrival", "must be true or false")
    if kind == "score":
        values["input"] = _input(spec, where, base, fail)
        values["entity_col"] = _text(spec, "entity_col", where, fail)
        values["max_reject_fraction"] = float(_number(spec, "max_reject_fraction", where, fail, default=0.05,
                                                      minimum=0, maximum=1))
        for flag in ("snapshot", "gate"):
            if flag in spec and not isinstance(spec[flag], bool):
                raise fail(where + flag, "must be true or false")
        values["snapshot"] = spec.get("snapshot", False)
        values["gate"] = spec.get("gate")
        if "max_row_change" in spec:
            values["max_row_change"] = float(_number(spec, "max_row_change", where, fail, default=0.5, minimum=0))
        if on_arrival and "cron" in spec:
            raise fail(where + "cron", "give either cron (with timezone) or on_arrival = true, not both")
        if not on_arrival and "cron" not in spec:
            raise fail(where + "cron", "missing; give a cron expression (with timezone) or on_arrival = true")
    if kind == "retrain":
        values.update(_retrain(spec, where, fail))
        if on_arrival:
            raise fail(where + "on_arrival", "a retrain job fires on cron or on_alert, not on arrival")
        if "cron" not in spec:
            if not values["alert_kinds"] and not values["every_labels"]:
                raise fail(where + "cron", "missing; give a cron expression (with timezone), on_alert or "
                           "every_labels (any of them)")
            return Job(**values)
    if on_arrival:
        for key in ("timezone",):
            if key in spec:
                raise fail(where + key, "only a cron job has a time zone; remove it or use cron")
        values["on_arrival"] = True
        values["poll_interval"] = float(_number(spec, "poll_interval", where, fail,
                                                default=DEFAULT_POLL_INTERVAL_S, minimum=0.05))
    else:
        if "poll_interval" in spec:
            raise fail(where + "poll_interval", "only an on_arrival job polls; remove it or set on_arrival = true")
        values["cron"], values["timezone"] = _cron(spec, where, fail)
    return Job(**values)


def _retrain(spec: dict[str, Any], where: str, fail: Fail) -> dict[str, Any]:
    """A retrain job's own keys, checked."""
    train, command = _text(spec, "train", where, fail), _text(spec, "command", where, fail)
    if (train is None) == (command is None):
        raise fail(where + "train", "give train = \"module:function\" (fit(frame, target)) or command = \"...\" "
                   "(prints the .skops path it wrote), one of them")
    if train is not None and ":" not in train:
        raise fail(where + "train", "give the fitting function as \"module:function\" (fit(frame, target))")
    kinds = spec.get("on_alert", [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) and k in RETRAIN_TRIGGERS for k in kinds):
        raise fail(where + "on_alert", f"a list of alert kinds: {', '.join(sorted(RETRAIN_TRIGGERS))}")
    promote = spec.get("promote", "if-better")
    if promote not in ("if-better", "manual"):
        raise fail(where + "promote", "\"if-better\" or \"manual\"")
    return {"train": train, "command": command, "alert_kinds": tuple(kinds), "promote": promote,
            "every_labels": int(_number(spec, "every_labels", where, fail, default=0, minimum=0, integer=True)),
            "window_days": float(_number(spec, "window_days", where, fail, default=0, minimum=0)),
            "after": int(_number(spec, "after", where, fail, default=1, minimum=1, integer=True)),
            "validation_share": float(_number(spec, "validation_share", where, fail, default=0.2, minimum=0.01,
                                              maximum=0.9)),
            "retire_after_days": float(_number(spec, "retire_after_days", where, fail, default=14, minimum=0)),
            "timeout": float(_number(spec, "timeout", where, fail, default=3600, minimum=1)),
            "min_labels": int(_number(spec, "min_labels", where, fail, default=100, minimum=2, integer=True))}


def cron_trigger(expr: str, zone: ZoneInfo) -> CronTrigger:
    """An APScheduler trigger that fires when the standard crontab line ``expr`` would.

    APScheduler counts days of the week from Monday = 0 where crontab has Sunday = 0, and it
    requires both day fields to match where cron accepts either; so the day of the week is
    passed by name, and restricting both day fields is refused.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"it has {len(fields)} fields where cron has 5")
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        raise ValueError("restricting both day of month and day of week is not supported (cron runs on "
                         "either, this scheduler would need both); use two jobs")
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(weekday),
                       timezone=zone)


def _weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, names, ranges, steps) as a list of day names."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            first, last = (_weekday(part) for part in base.split("-", 1))
        else:
            first = _weekday(base)
            last = 6 if step else first
        if first > last:
            raise ValueError(f"the day-of-week range {base!r} runs backwards")
        if step and not (step.isdigit() and int(step) > 0):
            raise ValueError(f"{step!r} is not a step")
        days |= {d % 7 for d in range(first, last + 1, int(step or 1))}
    return ",".join(WEEKDAYS[d] for d in sorted(days))


def _weekday(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text.lower() in WEEKDAYS:
        return WEEKDAYS.index(text.lower())
    raise ValueError(f"{text!r} is not a day of the week (0-7 or sun-sat)")


def _cron(spec: dict[str, Any], where: str, fail: Fail) -> tuple[str, str]:
    expr = _text(spec, "cron", where, fail, required=True)
    zone = _text(spec, "timezone", where, fail)
    if zone is None:
        raise fail(where + "timezone", "missing; a cron job needs an IANA time zone such as \"UTC\" or "
                   "\"Europe/Paris\"")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(where + "timezone", f"{zone!r} is not a known IANA time zone (such as \"UTC\" or "
                   "\"Europe/Paris\")") from None
    assert expr is not None
    try:
        cron_trigger(expr, tz)
    except ValueError as exc:
        raise fail(where + "cron", f"{expr!r} is not a valid cron expression (minute hour day month "
                   f"day-of-week): {exc}") from None
    return expr, zone


def _input(spec: dict[str, Any], where: str, base: Path, fail: Fail) -> str:
    text = _text(spec, "input", where, fail)
    if text is None:
        raise fail(where + "input", "missing; give the input location, a glob such as "
                   "\"data/incoming/*.parquet\" or \"data/events/dt=*\"")
    if "://" in text and not text.lower().startswith("file://"):  # an object store: checked when listed
        text = text.rstrip("/")
        last = text.rsplit("/", 1)[-1]
        return text if _is_glob(last) or last.lower().endswith((".parquet", ".pq", ".csv")) else text + "/*"
    pattern = Path(text.removeprefix("file://")).expanduser()
    pattern = pattern if pattern.is_absolute() else base.resolve() / pattern
    if not _is_glob(pattern.name) and pattern.is_dir():
        pattern = pattern / "*"  # a folder: each file or folder in it is a partition
    folder = Path(*_fixed_parts(pattern))
    if not folder.is_dir():
        raise fail(where + "input", f"the folder {folder} does not exist")
    return str(pattern)


def _is_glob(part: str) -> bool:
    return any(c in part for c in "*?[")


def _fixed_parts(pattern: Path) -> list[str]:
    """The leading parts of ``pattern`` without glob characters: the folder a scan starts from."""
    parts: list[str] = []
    for part in pattern.parts:
        if _is_glob(part):
            return parts
        parts.append(part)
    return parts[:-1]  # a single file: its folder


def _unknown(table: dict[str, Any], allowed: set[str], where: str, fail: Fail) -> None:
    for key in table:
        if key not in allowed:
            raise fail(where + key, f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _table(value: Any, key: str, fail: Fail, *, required: bool = False) -> dict[str, Any]:
    if value is None and required:
        raise fail(key, "missing; declare jobs as [jobs.NAME] tables")
    if not isinstance(value, dict):
        raise fail(key, "must be a table ([...])")
    return value


def _text(spec: dict[str, Any], key: str, where: str, fail: Fail, *, required: bool = False) -> str | None:
    value = spec.get(key)
    if value is None:
        if required:
            raise fail(where + key, "missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(where + key, "must be a non-empty string")
    return value.strip()


def _number(spec: dict[str, Any], key: str, where: str, fail: Fail, *, default: float, minimum: float,
            maximum: float | None = None, integer: bool = False) -> float:
    value = spec.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise fail(where + key, f"must be {'a whole number' if integer else 'a number'}")
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise fail(where + key, f"{value} is out of range; use a value {bound}")
    return value
