"""A client of the lookup API: single and batch lookups, retrying while the service answers 503."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from store.errors import ConfigError, InputError, NotFound, PredstoreError, StoreUnavailable

#: Each error status the API answers, as the predstore error it stands for.
ERRORS: dict[int, type[PredstoreError]] = {400: InputError, 401: ConfigError, 403: ConfigError, 404: NotFound,
                                           413: InputError, 503: StoreUnavailable}


class Client:
    """The lookup API at ``base_url`` (``http://host:8000``), with ``api_key`` if it needs one.

    A 503 (the database is away, or being migrated) is retried ``retries`` times, waiting what its
    ``Retry-After`` says (at most ``max_wait`` seconds each time); other errors are raised at once
    as predstore errors (`NotFound` for a 404, with the service's message).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0, retries: int = 3,
                 max_wait: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self._sleep = sleep

    def prediction(self, model: str, entity_id: str, *, version: int | None = None) -> dict[str, Any]:
        """The current prediction of ``entity_id`` by ``model`` (of ``version``, if given)."""
        path = f"/v1/models/{_quote(model)}/predictions/{_quote(entity_id)}"
        return self._request("GET", path, version=version)

    def predictions(self, model: str, entity_ids: Sequence[str] | None = None, *, rows: Any = None,
                    on_miss: str | None = None, version: int | None = None) -> dict[str, Any]:
        """The current predictions of ``entity_ids`` in one request: ``{"predictions": [...], "missing": [...]}``.

        Or send each entity's ``rows`` (dicts of column -> value, or a DataFrame) instead of ids:
        with ``on_miss="score"`` (or the model's policy, `predstore models configure --on-miss`), the
        entities the store has no prediction of are scored live from their rows, and the answer adds
        ``"rejected"`` (the rows validation refused, with their reason)."""
        if (entity_ids is None) == (rows is None):
            raise InputError("give either entity_ids or rows")
        if rows is None:
            body = json.dumps({"entity_ids": list(entity_ids or ())}).encode()
        else:
            body = _rows_body(rows, **({"on_miss": on_miss} if on_miss is not None else {}))
        return self._request("POST", f"/v1/models/{_quote(model)}/predictions:batch", version=version, body=body)

    def score(self, model: str, rows: Any, *, version: int | None = None) -> dict[str, Any]:
        """Score ``rows`` (dicts of column -> value, or a DataFrame) live with the current version (or
        ``version``): ``{"predictions": [...], "rejected": [...]}``. Needs a service started with
        ``--live-scoring`` and a key with the ``score`` scope."""
        return self._request("POST", f"/v1/models/{_quote(model)}/score", version=version, body=_rows_body(rows))

    def models(self) -> list[dict[str, Any]]:
        """Every model the key may read: versions, published runs, freshness."""
        answer: list[dict[str, Any]] = self._request("GET", "/v1/models")["models"]
        return answer

    def _request(self, method: str, path: str, *, version: int | None = None,
                 body: bytes | None = None) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode({'version': version})}" if version is not None else ""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path + query, data=body, headers=headers, method=method)
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer: dict[str, Any] = json.load(response)
                    return answer
            except urllib.error.HTTPError as exc:
                try:
                    if exc.code != 503 or attempt == self.retries:
                        raise _error(exc) from None
                    wait = min(_seconds(exc.headers.get("Retry-After")), self.max_wait)
                finally:
                    exc.close()
                self._sleep(wait)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise StoreUnavailable(f"the lookup API at {self.base_url} does not answer ({reason})") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")


def _rows_body(rows: Any, **fields: Any) -> bytes:
    """``{"rows": [...], **fields}`` as JSON; a DataFrame's records and NumPy values included."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    return json.dumps({"rows": records, **fields}, default=_plain).encode()


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON takes (NaN stays NaN: the service reads it as missing)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a row value of type {type(value).__name__} cannot be sent as JSON")


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _seconds(retry_after: str | None) -> float:
    """Seconds from a Retry-After header's delay (its HTTP-date form counts as one second)."""
    try:
        return max(0.0, float(retry_after)) if retry_after else 1.0
    except ValueError:
        return 1.0


def _error(exc: urllib.error.HTTPError) -> PredstoreError:
    try:
        message = json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = exc.reason
    return ERRORS.get(exc.code, PredstoreError)(f"lookup API: {exc.code} {message}")
