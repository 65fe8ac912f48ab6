"""The OpenAPI document, generated from the registry: one path per command, its request body
the command's pydantic params model. Nothing here lists commands by hand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic.json_schema import models_json_schema

if TYPE_CHECKING:
    from foundry.adapters.commands.registry import CommandRegistry

_ENVELOPE = {
    "type": "object",
    "required": ["success", "timestamp"],
    "properties": {
        "success": {"type": "boolean"},
        "timestamp": {"type": "string", "format": "date-time"},
        "error": {"type": "string", "description": "a sentence naming the field and the rule"},
        "errorCode": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
_FAILURES = {
    "400": "invalid_input", "401": "unauthenticated", "403": "forbidden", "404": "not_found",
    "409": "revision_conflict and other state conflicts", "413": "payload_too_large",
    "429": "rate_limited", "503": "store_unavailable",
}


def build_openapi(registry: CommandRegistry, scope_of: dict[str, str]) -> dict[str, Any]:
    """OpenAPI 3.1 for every command in `registry`; `scope_of` names each one's scope."""
    specs = list(registry)
    models = {s.params for s in specs}
    refs, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}", by_alias=True)
    schemas: dict[str, Any] = {"Envelope": _ENVELOPE, **defs.get("$defs", {})}
    paths: dict[str, Any] = {
        "/healthz": _get("the process answers", "health"),
        "/readyz": _get("the store is reachable and the views are caught up", "health"),
        "/v1/runs/{runId}/events": _stream("a run's events as Server-Sent Events; resume with "
                                           "Last-Event-ID (the event's version)", run=True),
        "/v1/runs/events": _stream("every run's events (compact) as Server-Sent Events; "
                                   "resume with Last-Event-ID (the notification id)"),
    }
    for spec in sorted(specs, key=lambda s: s.name):
        paths[f"/v1/commands/{spec.name}"] = {"post": {
            "operationId": spec.name.replace("/", "_").replace("-", "_"),
            "summary": spec.summary or spec.name,
            "tags": [spec.name.split("/", 1)[0]],
            "description": f"Needs a token with scope `{scope_of[spec.name]}` (or above).",
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": refs[(spec.params, "validation")]}}},
            "responses": {
                "200": _envelope_response("the command's result"),
                **{code: _envelope_response(what) for code, what in _FAILURES.items()},
            },
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Foundry", "version": "1",
                 "description": "Every command of the registry, as POST /v1/commands/{name}; "
                                "the body is its params, the answer its envelope."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a token from `foundry tokens create`"}}},
    }


def _envelope_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Envelope"}}}}


def _get(description: str, tag: str) -> dict[str, Any]:
    return {"get": {"summary": description, "tags": [tag], "security": [],
                    "responses": {"200": _envelope_response("ready"),
                                  "503": _envelope_response("not ready")}}}


def _stream(description: str, *, run: bool = False) -> dict[str, Any]:
    params = [{"name": "Last-Event-ID", "in": "header", "required": False,
               "schema": {"type": "string"}}]
    if run:
        params.append({"name": "runId", "in": "path", "required": True,
                       "schema": {"type": "string", "format": "uuid"}})
    return {"get": {"summary": description, "tags": ["runs"], "parameters": params,
                    "responses": {"200": {"description": "an event stream", "content": {
                        "text/event-stream": {"schema": {"type": "string"}}}},
                                  "404": _envelope_response("no such run")}}}
