"""The OpenAPI 3.1 description of the management service's JSON API, served at
``/openapi.json`` by :mod:`bertops.ui.app`.

Hand-kept beside :mod:`bertops.ui.api` (a test runs Schemathesis against it, so an
endpoint that answers outside what is written here fails): paths, parameters, the
response codes each endpoint can give, and the shapes of the main answers.
"""

from __future__ import annotations

from typing import Any

# An object name as the API server accepts it (bertops.ui.catalog.NAME): anything else is
# answered 422 before Kubernetes is asked.
NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
}
NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Object name (a Kubernetes DNS subdomain).",
    "schema": NAME_SCHEMA,
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "deployments": {"type": "array", "items": {"type": "string"}},
    },
}
CONDITION = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
    },
}
MODEL_ROW = {
    "type": "object",
    "required": ["name", "ready", "metrics", "size", "latency", "lineage", "servedBy"],
    "properties": {
        "name": {"type": "string"},
        "family": {"type": ["string", "null"]},
        "format": {"type": ["string", "null"]},
        "ready": CONDITION,
        "metrics": {"type": "object"},
        "size": {"type": "object"},
        "latency": {"type": "object"},
        "parent": {"type": ["string", "null"]},
        "lineage": {"type": "array", "items": {"type": "object"}},
        "servedBy": {"type": "array", "items": {"type": "string"}},
    },
}


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["namespace", "items"],
        "properties": {"namespace": {"type": "string"}, "items": {"type": "array", "items": item}},
    }


def _responses(ok: dict[str, Any], *codes: int, media: str = "application/json") -> dict[str, Any]:
    described = {
        401: "No or wrong bearer token.",
        403: "Read-only mode, a change without confirmation, or refused by Kubernetes RBAC.",
        404: "No such object.",
        409: "Refused in this state (e.g. the model is served; the artifact is unreadable).",
        422: "Invalid input.",
    }
    answers: dict[str, Any] = {"200": {"description": "OK", "content": {media: {"schema": ok}}}}
    for code in (401, *codes):
        answers[str(code)] = {
            "description": described[code],
            "content": {"application/json": {"schema": ERROR}},
        }
    return answers


def _get(
    summary: str, ok: dict[str, Any], *codes: int, media: str = "application/json", **extra: Any
) -> dict[str, Any]:
    answers = _responses(ok, 403, *codes, media=media)
    return {"get": {"summary": summary, "responses": answers, **extra}}


def spec() -> dict[str, Any]:
    named = {"parameters": [NAME_PARAM]}
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bertops management API",
            "version": "0.1.0",
            "description": "Models, datasets, trainings and deployments of one namespace. "
            "Bearer token auth; changes need --allow-writes.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/session": _get("How this service runs (namespace, writes, auth).", obj),
            "/api/models": _get("The model catalogue.", _list_of(MODEL_ROW)),
            "/api/models/{name}": {
                **_get("One model: metrics, lineage, curves, confusion matrix.", obj, 404, 422),
                "delete": {
                    "summary": "Delete a model; refused while a deployment serves it.",
                    "parameters": [
                        {
                            "name": "force",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean", "default": False},
                        }
                    ],
                    "responses": _responses(obj, 403, 404, 409, 422),
                },
                **named,
            },
            "/api/models/{name}/download": {
                **_get(
                    "The verified artifact as a tar (headers carry its sha256 and the manifest's).",
                    {"type": "string", "format": "binary"},
                    404,
                    409,
                    422,
                    media="application/x-tar",
                ),
                **named,
            },
            "/api/compare": _get(
                "Two models side by side: metrics, size, latency.",
                obj,
                404,
                422,
                parameters=[
                    {"name": key, "in": "query", "required": True, "schema": NAME_SCHEMA}
                    for key in ("a", "b")
                ],
            ),
            "/api/datasets": _get("Datasets.", _list_of(obj)),
            "/api/datasets/{name}": {**_get("One dataset.", obj, 404, 422), **named},
            "/api/trainings": _get("Training runs.", _list_of(obj)),
            "/api/trainings/{name}": {**_get("One training run.", obj, 404, 422), **named},
            "/api/deployments": _get("Deployments with rollout and drift.", _list_of(obj)),
            "/api/deployments/{name}": {**_get("One deployment.", obj, 404, 422), **named},
            "/api/deployments/{name}/actions/{action}": {
                "post": {
                    "summary": "Ask the operator for a rollout action (an annotation).",
                    "responses": _responses(obj, 403, 404, 422),
                },
                "parameters": [
                    NAME_PARAM,
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": ["promote", "abort", "pause", "resume", "retry"],
                        },
                    },
                ],
            },
        },
    }
