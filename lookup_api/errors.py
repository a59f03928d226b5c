"""The one place errors become responses: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from store.errors import (
    InputError,
    ModelError,
    NotFound,
    PredstoreError,
    SchemaOutdated,
    StoreUnavailable,
    mask_secrets,
    nearest,
)

log = logging.getLogger("predstore.lookup_api.errors")

#: Seconds a client is told to wait when the database is away.
RETRY_AFTER = 1


class Stale(NotFound):
    """The current prediction is older than the model's maximum age and the policy hides it."""


#: Status and code of each predstore error an API request can meet; others are a 500.
STATUS: dict[type[PredstoreError], tuple[int, str]] = {
    Stale: (404, "stale"),
    NotFound: (404, "not_found"),
    StoreUnavailable: (503, "store_unavailable"),
    SchemaOutdated: (503, "schema_outdated"),
    InputError: (400, "bad_request"),
    ModelError: (503, "model_unavailable"),
}


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify(error={"code": code, "message": mask_secrets(message)})
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _predstore_error(exc: PredstoreError) -> Response:
    found = nearest(STATUS, exc)
    if found:
        status, code = found
        return error_response(status, code, str(exc))
    log.error("unexpected predstore error: %s", exc)
    return error_response(500, "internal", str(exc))


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(status, (exc.name or "error").lower().replace(" ", "_"), exc.description or "")
    headers = dict(exc.get_headers())
    for name in ("WWW-Authenticate", "Allow"):
        if name in headers:
            response.headers[name] = headers[name]
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error answering a request")
    return error_response(500, "internal", "an unexpected error occurred; it has been logged")


def init_app(app: Flask) -> None:
    app.register_error_handler(PredstoreError, _predstore_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
