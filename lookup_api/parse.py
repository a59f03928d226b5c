"""Parse and check what a request sends; anything wrong is a 400 that says what and why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from werkzeug.exceptions import BadRequest

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
    """The JSON document of a request body; None when it is not JSON (nested too deep included)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested [ or {
        return None


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
