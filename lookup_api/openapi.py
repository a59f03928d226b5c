"""The OpenAPI 3.1 document served at /openapi.json, describing every endpoint."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from lookup_api.parse import MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_VERSION
from store.settings import Settings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Malformed input", 401: "API key missing", 403: "API key not valid",
            404: "Unknown model, version or entity, or a stale prediction hidden by policy",
            413: "More rows than the batch limit",
            503: "The database is unreachable; retry after Retry-After seconds"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_NAME = {"name": "name", "in": "path", "required": True, "description": "Model name",
         "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}}
_VERSION = {"name": "version", "in": "query", "required": False, "description": "Only runs of this model version",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}


def _schemas(max_batch: int) -> dict[str, Any]:
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Prediction": {
            "type": "object",
            "required": ["entity_id", "model", "model_version", "run_id", "partition", "scored_at", "age", "stale",
                         "prediction", "label", "scores", "version_current", "source"],
            "properties": {
                "entity_id": {"type": "string"}, "model": {"type": "string"}, "model_version": {"type": "integer"},
                "run_id": {"type": "integer"}, "partition": {"type": "string"}, "scored_at": _TIMESTAMP,
                "age": {"type": "number", "description": "Seconds since the prediction was scored"},
                "stale": {"type": "boolean", "description": "Older than the model's maximum age"},
                "prediction": {"type": ["number", "null"]}, "label": {"type": ["string", "null"]},
                "scores": {"type": ["array", "null"], "items": {"type": ["number", "null"]}},
                "version_current": {"type": "boolean", "description": (
                    "From the model's current version; false: an earlier version's answer, kept because the "
                    "current version never scored the entity")},
                "source": {"type": "string", "enum": ["precomputed"],
                           "description": "Where the answer comes from: a published run"},
            },
        },
        "LivePrediction": {
            "type": "object",
            "required": ["entity_id", "model", "model_version", "prediction", "label", "scores", "source"],
            "properties": {
                "entity_id": {"type": "string"}, "model": {"type": "string"}, "model_version": {"type": "integer"},
                "prediction": {"type": ["number", "null"]}, "label": {"type": ["string", "null"]},
                "scores": {"type": ["array", "null"], "items": {"type": ["number", "null"]}},
                "source": {"type": "string", "enum": ["live"], "description": "Scored on request from its row"},
            },
        },
        "Rows": {
            "type": "array", "maxItems": max_batch, "description": (
                "One object per entity: its id (entity_id, or the model's entity column) and its features, "
                "as the model's registration names them"),
            "items": {"type": "object", "additionalProperties": {
                "type": ["string", "number", "boolean", "null"]}},
        },
        "Rejected": {
            "type": "array", "description": "Rows validation refused, each with its reason (as a batch run would)",
            "items": {"type": "object", "required": ["entity_id", "reason"], "properties": {
                "entity_id": {"type": ["string", "null"]}, "reason": {"type": "string"}}},
        },
        "ScoreRequest": {
            "type": "object", "required": ["rows"], "additionalProperties": False,
            "properties": {"rows": _ref("Rows")},
        },
        "ScoreResponse": {
            "type": "object", "required": ["predictions", "rejected"],
            "properties": {"predictions": {"type": "array", "items": _ref("LivePrediction")},
                           "rejected": _ref("Rejected")},
        },
        "BatchRequest": {"oneOf": [
            {"type": "object", "required": ["entity_ids"], "additionalProperties": False,
             "properties": {"entity_ids": {"type": "array", "maxItems": max_batch, "items": {
                 "type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}}}},
            {"type": "object", "required": ["rows"], "additionalProperties": False,
             "properties": {"rows": _ref("Rows"), "on_miss": {
                 "type": "string", "enum": ["404", "score"], "description": (
                     "What to do with an entity the store has no prediction of: leave it missing, or score "
                     "it live from its row (needs live scoring and a key with the score scope); default: "
                     "the model's policy")}}},
        ]},
        "BatchResponse": {
            "type": "object", "required": ["predictions", "missing"],
            "properties": {"predictions": {"type": "array", "items": {
                               "anyOf": [_ref("Prediction"), _ref("LivePrediction")]}},
                           "missing": {"type": "array", "items": {"type": "string"}},
                           "rejected": _ref("Rejected")},
        },
        "Model": {
            "type": "object", "required": ["name", "current_version", "versions", "partitions", "freshness"],
            "properties": {
                "name": {"type": "string"},
                "current_version": {"type": ["integer", "null"]},
                "versions": {"type": "array", "items": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "task": {"type": "string"}, "classes": {},
                    "aliases": {"type": "array", "items": {"type": "string"}}, "created_at": _TIMESTAMP}}},
                "partitions": {"type": "array", "items": {"type": "object", "properties": {
                    "partition": {"type": "string"}, "run_id": {"type": "integer"},
                    "model_version": {"type": "integer"}, "rows": {"type": "integer"}, "scored_at": _TIMESTAMP,
                    "published_at": _TIMESTAMP, "age": {"type": "number"}, "stale": {"type": "boolean"}}}},
                "freshness": {"type": "object", "properties": {
                    "last_published_at": _NULLABLE_TIMESTAMP, "oldest_scored_at": _NULLABLE_TIMESTAMP,
                    "age": {"type": ["number", "null"]}, "max_age": {"type": ["integer", "null"]},
                    "stale": {"type": "boolean"}}},
            },
        },
    }


def spec(settings: Settings) -> dict[str, Any]:
    """The document for an API configured by ``settings`` (the batch limit shows in it)."""
    secured: list[dict[str, list[str]]] = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "predstore lookup API", "version": version("predstore"),
                 "description": "Precomputed predictions from the most recently published run of each model."},
        "components": {
            "schemas": _schemas(settings.api_max_batch),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "Needed once API keys are configured"}},
        },
        "paths": {
            "/v1/models": {"get": {
                "operationId": "listModels", "summary": "Every model: versions, published runs, freshness",
                "security": secured,
                "responses": {"200": _json({"type": "object", "required": ["models"], "properties": {
                    "models": {"type": "array", "items": _ref("Model")}}}, "The models"),
                    **_errors(401, 403, 503)}}},
            "/v1/models/{name}": {"get": {
                "operationId": "getModel", "summary": "One model: versions, published runs, freshness",
                "security": secured, "parameters": [_NAME],
                "responses": {"200": _json(_ref("Model"), "The model"), **_errors(400, 401, 403, 404, 503)}}},
            "/v1/models/{name}/predictions/{entity_id}": {"get": {
                "operationId": "getPrediction", "summary": "The current prediction of one entity",
                "security": secured,
                "parameters": [_NAME, {"name": "entity_id", "in": "path", "required": True,
                                       "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}},
                               _VERSION],
                "responses": {"200": _json(_ref("Prediction"), "The prediction"),
                              **_errors(400, 401, 403, 404, 503)}}},
            "/v1/models/{name}/predictions:batch": {"post": {
                "operationId": "getPredictions", "summary": "The current predictions of many entities",
                "security": secured, "parameters": [_NAME, _VERSION],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
                "responses": {"200": _json(_ref("BatchResponse"), "Predictions found, and the ids without one"),
                              **_errors(400, 401, 403, 404, 413, 503)}}},
            "/v1/models/{name}/score": {"post": {
                "operationId": "score", "summary": (
                    "Score rows live with the current version (or ?version=N), by the rules of a batch run; "
                    "only with `predstore serve --live-scoring`, and a key with the score scope"),
                "security": secured, "parameters": [_NAME, _VERSION],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ScoreRequest")}}},
                "responses": {"200": _json(_ref("ScoreResponse"), "Predictions, and the rows refused"),
                              **_errors(400, 401, 403, 404, 413, 503)}}},
            "/healthz": {"get": {"operationId": "healthz", "summary": "The process is up", "security": [],
                                 "responses": {"200": _json({"type": "object"}, "Up")}}},
            "/readyz": {"get": {"operationId": "readyz", "summary": "The database answers and its schema is at head",
                                "security": [], "responses": {"200": _json({"type": "object"}, "Ready"),
                                                              **_errors(503)}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
        },
    }
