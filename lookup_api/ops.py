"""Operational endpoints: liveness, readiness, metrics and the OpenAPI document (no key needed)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from lookup_api import openapi
from lookup_api import service as svc
from lookup_api.metrics import render
from lookup_api.views import service

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict[str, str]:
    return svc.readiness(service())


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = render(service().metrics)
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi_json() -> dict[str, Any]:
    return openapi.spec(service().settings)
