"""OpenAPI request bodies for routes that read their body by hand (``openapi_extra``), so ``/openapi.json``
declares them — generated clients and fuzzers see the real shapes — while the route keeps its own fast,
strict parsing. The schemas come from the same pydantic models the route validates with."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

__all__ = ["binary_request_body", "json_request_body"]

_REF = "#/$defs/"


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Replace every ``{"$ref": "#/$defs/X"}`` by X itself (siblings of the ref kept), so the schema needs
    no ``$defs`` and can sit anywhere in an OpenAPI document."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        name = ref[len(_REF) :]
        if name in seen:
            raise ValueError(f"cannot inline the recursive schema {name}")
        siblings = {k: _inline(v, defs, seen) for k, v in node.items() if k != "$ref"}
        return {**_inline(defs[name], defs, (*seen, name)), **siblings}
    return {k: _inline(v, defs, seen) for k, v in node.items() if k != "$defs"}


def json_request_body(tp: Any, description: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON body of type ``tp`` (a model or a union of models)."""
    schema = TypeAdapter(tp).json_schema(mode="validation")
    inlined = _inline(schema, schema.get("$defs", {}))
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": inlined}},
        }
    }


def binary_request_body(content_types: tuple[str, ...], description: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a required raw body of one of ``content_types``."""
    schema = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {ct: {"schema": dict(schema)} for ct in content_types},
        }
    }
