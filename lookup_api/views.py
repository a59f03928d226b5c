"""The /v1 endpoints: parse the request, ask the service, return JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, request

from lookup_api import parse
from lookup_api import service as svc

bp = Blueprint("v1", __name__, url_prefix="/v1")


def service() -> svc.Service:
    found: svc.Service = current_app.extensions["predstore"]
    return found


@bp.before_request
def require_key() -> None:
    model = (request.view_args or {}).get("name")
    g.models = service().keys.check(request.headers.get("Authorization"), model=model)


@bp.get("/models")
def list_models() -> dict[str, Any]:
    allowed = g.get("models")
    return {"models": [m for m in svc.models(service()) if allowed is None or m["name"] in allowed]}


@bp.get("/models/<name>")
def show_model(name: str) -> dict[str, Any]:
    return svc.models(service(), parse.model_name(name))[0]


@bp.get("/models/<name>/predictions/<path:entity_id>")
def get_prediction(name: str, entity_id: str) -> dict[str, Any]:
    model = parse.model_name(name)
    entity = parse.text(entity_id, "the entity id")
    return svc.prediction(service(), model, entity, version=parse.version(request.args))


@bp.post("/models/<name>/predictions:batch")
def get_predictions(name: str) -> Response:
    model = parse.model_name(name)
    version = parse.version(request.args)
    body = parse.json_body(request.get_data())
    limit = service().settings.api_max_batch
    if isinstance(body, dict) and "rows" in body:
        rows = parse.rows(body, max_rows=limit, fields=frozenset({"rows", "on_miss"}))
        text = svc.predictions_for_rows(service(), model, rows, on_miss=parse.on_miss(body), version=version,
                                        may_score=lambda: may_score(model))
        return Response(text, mimetype="application/json")
    ids = parse.batch(body, max_ids=limit)
    return Response(svc.predictions(service(), model, ids, version=version), mimetype="application/json")


@bp.post("/models/<name>/score")
def score(name: str) -> dict[str, Any]:
    model = parse.model_name(name)
    version = parse.version(request.args)
    may_score(model)
    svc.live_models(service())  # 404 while live scoring is off
    rows = parse.rows(parse.json_body(request.get_data()), max_rows=service().settings.api_max_batch)
    return svc.score(service(), model, rows, version=version)


def may_score(model: str) -> None:
    """403 unless the request's key may score (`predstore apikeys create NAME --scope score`)."""
    service().keys.check(request.headers.get("Authorization"), model=model, scope="score")
