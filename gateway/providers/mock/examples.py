"""Example values for JSON schemas: tool-call arguments and structured-output replies.

A deterministic, schema-shaped value is enough for a gateway to pass along; this is not a
validator and follows only the common keywords (type, properties, items, enum, const, anyOf).
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 6


def example_for(schema: object, depth: int = 0) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_for(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return example_object(schema, depth)
    if kind == "array":
        return [example_for(schema.get("items"), depth + 1)]
    return _SCALARS.get(kind) if isinstance(kind, str) else None


def example_object(schema: object, depth: int = 0) -> dict[str, Any]:
    """An object with every declared property filled (so strict schemas are satisfied)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    return {name: example_for(sub, depth + 1) for name, sub in properties.items()}


_SCALARS: dict[str, Any] = {
    "string": "mock",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "null": None,
}
