"""Alerts: what one looks like, and sending it to a webhook (POST JSON, retries, a timeout)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("predstore.monitor")


@dataclass(frozen=True)
class Alert:
    """One alert, as stored in ``alerts`` and sent to the webhook and the scheduler's on_alert."""

    model: str
    model_version: int | None
    kind: str
    scope: str
    message: str
    run_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    alert_id: int | None = None
    new: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deliver(url: str, alert: Alert, *, timeout: float, retries: int,
            sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST ``alert`` as JSON to ``url``; retry failures (connection errors, 5xx, 429) with a
    doubling delay. Returns None when delivered, else why not (never raises)."""
    body = json.dumps(alert.to_dict(), default=str).encode()
    error = "not sent"
    for attempt in range(retries + 1):
        if attempt:
            sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "predstore-monitor"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the user's URL)
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500 and exc.code != 429:
                break  # the receiver refused it; sending it again will not help
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        log.warning("alert %s: webhook attempt %d of %d failed: %s", alert.alert_id, attempt + 1, retries + 1, error)
    return error
