"""The monitor's settings: thresholds, tolerance, windows and the alert webhook.

Built once at each entry point from the environment: ``PREDSTORE_ALERT_WEBHOOK`` (an http or
https URL alerts are POSTed to as JSON; it wins over the file's ``webhook_url``) and
``PREDSTORE_MONITOR_CONFIG`` (a TOML file; every key optional)::

    alpha = 0.01                 # level of a check: the chance it flags anything when nothing drifted
    warning_alpha = 0.1          # the looser level of a warning
    correction = "holm"          # across a check's features and outputs: holm, or bh (false discovery rate)
    simulations = 200            # multinomial draws per column for the distances' noise floors
    in_sample_output_alerts = false  # alert (not only warn) on outputs whose baseline is in-sample
    drift_share = 0.5            # share of drifted features that makes the dataset drifted
    cusum_arl = 365              # quiet runs between two false gradual_drift alerts, on average
    cusum_k = 0.5                # the smallest shift a CUSUM looks for, in standard errors of a run, halved
    performance_tolerance = 0.2  # relative degradation from registration that raises an alert
    min_labels = 30              # fewer labels than this: performance is shown, never judged
    window = "week"              # performance windows by label event time: day, week or month
    backfill_alerts = false      # alert on labels older than every run holding their entity too
    miss_rate = 0.05             # alert when more of the entities the lookup API was asked for in the last
                                 # 24 hours had no prediction served (unset: reported, never alerted)
    miss_min_lookups = 100       # fewer lookups than this: the miss rate is shown, never judged
    webhook_timeout = 5.0
    webhook_retries = 3
    webhook_url = "https://hooks.example.com/predstore"  # http or https; PREDSTORE_ALERT_WEBHOOK wins

    [thresholds]                 # (warning, alert) for every feature
    psi = [0.1, 0.25]

    [features.temp]              # for one feature (a name the model checked lacks is warned of)
    wasserstein = [0.2, 0.4]
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitor.sequential import CusumConfig
from monitor.stats import CORRECTIONS, DEFAULT_THRESHOLDS, DriftConfig
from store.errors import ConfigError

WINDOWS = ("day", "week", "month")


@dataclass(frozen=True)
class MonitorConfig:
    """Everything a monitor run needs besides the store's settings."""

    drift: DriftConfig = field(default_factory=DriftConfig)
    cusum: CusumConfig = field(default_factory=CusumConfig)
    performance_tolerance: float = 0.2
    min_labels: int = 30
    window: str = "week"
    backfill_alerts: bool = False
    webhook_url: str | None = None
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    miss_rate: float | None = None
    miss_min_lookups: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MonitorConfig:
        """Read ``PREDSTORE_ALERT_WEBHOOK`` and the TOML file named by ``PREDSTORE_MONITOR_CONFIG``."""
        env = os.environ if environ is None else environ
        path = env.get("PREDSTORE_MONITOR_CONFIG", "").strip()
        config = from_toml(Path(path)) if path else cls()
        webhook = webhook_url(env.get("PREDSTORE_ALERT_WEBHOOK", "").strip() or None, "PREDSTORE_ALERT_WEBHOOK")
        return replace(config, webhook_url=webhook or config.webhook_url)


def unknown_features(config: MonitorConfig, model: str, columns: Sequence[str]) -> str | None:
    """A warning naming each ``[features.NAME]`` table of ``config`` that is no column of ``model``
    (``columns``: its features and outputs), with the nearest name; None when every one is.

    The file is shared by every model, so a table for another model's feature is not an error:
    it is said when a model that lacks it is checked, where a typo shows."""
    unknown = [name for name in config.drift.features if name not in columns]
    if not unknown:
        return None
    guesses = {name: difflib.get_close_matches(name, columns, n=1) for name in unknown}
    named = ", ".join(f"[features.{name}]" + (f" (did you mean {guesses[name][0]!r}?)" if guesses[name] else "")
                      for name in unknown)
    shown = [c for c in columns if not c.startswith("__")]
    return (f"the monitor config's {named} name(s) no feature of {model}, so their thresholds apply to none of its "
            f"columns; its features: {', '.join(shown[:20])}{'...' if len(shown) > 20 else ''}")


def webhook_url(value: Any, where: str) -> str | None:
    """``value`` if it is an http(s) URL with a host (or None); else a ConfigError.

    urllib would also POST to ``file:``, ``ftp:`` or ``data:`` URLs. The message never echoes the
    URL: a webhook's path or query is often its secret (Slack, Teams)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a URL string, got a {type(value).__name__}; "
                          "write an http:// or https:// URL")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a port out of range)
    except ValueError:
        raise ConfigError(f"{where}: not a valid URL; write an http:// or https:// URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ConfigError(f"{where}: the webhook URL has {scheme}; write an http:// or https:// URL")
    if not host:
        raise ConfigError(f"{where}: the webhook URL has no host; write an http:// or https:// URL with one")
    return value


def from_toml(path: Path) -> MonitorConfig:
    """A `MonitorConfig` from a TOML file (see the module docstring)."""
    where = f"PREDSTORE_MONITOR_CONFIG {path}"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    known = {"alpha", "warning_alpha", "correction", "simulations", "in_sample_output_alerts", "drift_share",
             "cusum_arl", "cusum_k", "performance_tolerance", "min_labels", "window", "backfill_alerts",
             "webhook_timeout", "webhook_retries", "webhook_url", "miss_rate", "miss_min_lookups",
             "thresholds", "features"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    window = data.get("window", "week")
    if window not in WINDOWS:
        raise ConfigError(f"{where}: window = {window!r}; use one of {', '.join(WINDOWS)}")
    correction = data.get("correction", "holm")
    if correction not in CORRECTIONS:
        raise ConfigError(f"{where}: correction = {correction!r}; use one of {', '.join(CORRECTIONS)}")
    in_sample, backfill = data.get("in_sample_output_alerts", False), data.get("backfill_alerts", False)
    for key, flag in (("in_sample_output_alerts", in_sample), ("backfill_alerts", backfill)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}: {key} = {flag!r}; write true or false")
    drift = DriftConfig(
        thresholds={**DEFAULT_THRESHOLDS, **_limits(data.get("thresholds", {}), f"{where} [thresholds]")},
        features={name: _limits(table, f"{where} [features.{name}]")
                  for name, table in data.get("features", {}).items()},
        alpha=_number(data, "alpha", 0.01, where, 0, 1),
        warning_alpha=_number(data, "warning_alpha", 0.1, where, 0, 1),
        correction=correction,
        simulations=int(_number(data, "simulations", 200, where, 9, 100_000)),
        in_sample_output_alerts=in_sample,
        drift_share=_number(data, "drift_share", 0.5, where, 0, 1),
    )
    return MonitorConfig(
        drift=drift,
        cusum=CusumConfig(k=_number(data, "cusum_k", 0.5, where, 0, 10),
                          arl=_number(data, "cusum_arl", 365, where, 1, 1e9)),
        performance_tolerance=_number(data, "performance_tolerance", 0.2, where, 0, 100),
        min_labels=int(_number(data, "min_labels", 30, where, 0, 1e12)),
        window=window,
        backfill_alerts=backfill,
        webhook_url=webhook_url(data.get("webhook_url"), f"{where}: webhook_url"),
        webhook_timeout=_number(data, "webhook_timeout", 5.0, where, 0, 300),
        webhook_retries=int(_number(data, "webhook_retries", 3, where, -1, 20)),
        miss_rate=_number(data, "miss_rate", 0.0, where, 0, 1) if "miss_rate" in data else None,
        miss_min_lookups=int(_number(data, "miss_min_lookups", 100, where, 1, 1e12)),
    )


def _limits(table: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of metric = [warning, alert]")
    out = {}
    for metric, pair in table.items():
        if metric not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"{where}: unknown metric {metric!r}; use {', '.join(DEFAULT_THRESHOLDS)}")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
                and 0 <= pair[0] <= pair[1]):
            raise ConfigError(f"{where}: {metric} = {pair!r}; write [warning, alert] with 0 <= warning <= alert")
        out[metric] = (float(pair[0]), float(pair[1]))
    return out


def _number(data: Mapping[str, Any], key: str, default: float, where: str, low: float, high: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ConfigError(f"{where}: {key} = {value!r}; expected a number in ({low}, {high}]")
    return float(value)
