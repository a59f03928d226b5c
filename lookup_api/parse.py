"""Parse and check what a request sends; anything wrong is a 400 that says what and why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from store.schema import MAX_ENTITY_ID_LENGTH

#: Longest entity id (the one limit scoring applies too), and longest model name, the API accepts.
MAX_ID_LENGTH = MAX_ENTITY_ID_LENGTH
MAX_NAME_LENGTH = 128
MAX_VERSION = 2**31 - 1


def text(value: Any, what: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """A non-empty string of at most ``max_length`` characters that PostgreSQL can store."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise BadRequest(f"{what} is empty")
    if len(value) > max_length:
        raise BadRequest(f"{what} is {len(value)} characters long; the limit is {max_length}")
    if "\x00" in value:
        raise BadRequest(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None
    return value


def model_name(value: str) -> str:
    return text(value, "the model name", max_length=MAX_NAME_LENGTH)


def version(args: Mapping[str, str]) -> int | None:
    """The optional ``?version=N`` (a positive whole number)."""
    raw = args.get("version")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_VERSION:
        raise BadRequest(f"version={raw[:40]!r} is not a model version (a whole number from 1)")
    return int(raw)


def json_body(data: bytes) -> Any:
    """The JSON document of a request body; None when it is not JSON (nested too deep included).

    orjson parses it (a 1,000-row body in a fifth of the standard library's time); what orjson
    refuses (NaN, an escaped lone surrogate, an integer past 64 bits, deep nesting) is read as
    the standard library reads it, so every body means what it meant before."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested [ or {
        return None


def rows(body: Any, *, max_rows: int, fields: frozenset[str] = frozenset({"rows"})) -> list[dict[str, Any]]:
    """The ``rows`` of a body ``{"rows": [{"<column>": value, ...}, ...]}``: 400 unless a list of
    objects, 413 when more than ``max_rows``."""
    if body is None:
        raise BadRequest('the body must be JSON: {"rows": [{"entity_id": "...", "<feature>": value, ...}, ...]}')
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise BadRequest('the body must be a JSON object with a list "rows" of objects (column -> value)')
    extra = sorted(set(body) - fields)
    if extra:
        raise BadRequest(f"unknown field(s) in the body: {', '.join(map(repr, extra))[:200]}")
    found = body["rows"]
    if len(found) > max_rows:
        raise RequestEntityTooLarge(f"{len(found)} rows in one request; the limit is {max_rows} "
                                    "(PREDSTORE_API_MAX_BATCH)")
    for i, row in enumerate(found):
        if not isinstance(row, dict):
            raise BadRequest(f"rows[{i}] must be an object (column -> value), not {type(row).__name__}")
    return found


def on_miss(body: dict[str, Any]) -> str | None:
    """A batch's ``on_miss``: "score" or "404"; None when not given (the model's policy applies)."""
    value = body.get("on_miss")
    if value is not None and value not in ("404", "score"):
        raise BadRequest(f'"on_miss" must be "404" or "score", not {str(value)[:40]!r}')
    return value


def batch(body: Any, *, max_ids: int) -> list[str]:
    """The entity ids of a batch request ``{"entity_ids": [...]}``, duplicates dropped, order kept."""
    if body is None:
        raise BadRequest('the body must be JSON: {"entity_ids": ["...", ...]}')
    if not isinstance(body, dict) or "entity_ids" not in body:
        raise BadRequest('the body must be a JSON object with a list "entity_ids"')
    extra = sorted(set(body) - {"entity_ids"})
    if extra:
        raise BadRequest(f"unknown field(s) in the body: {', '.join(map(repr, extra))[:200]}")
    ids = body["entity_ids"]
    if not isinstance(ids, list):
        raise BadRequest(f'"entity_ids" must be a list, not {type(ids).__name__}')
    if len(ids) > max_ids:
        raise BadRequest(f"{len(ids)} entity ids in one request; the limit is {max_ids}")
    return list(dict.fromkeys(text(v, f"entity_ids[{i}]") for i, v in enumerate(ids)))
