"""Hypothesis strategies from the JSON Schemas of an OpenAPI 3.1 document.

A small converter of our own: the JSON-Schema plugin for hypothesis does not work with current
hypothesis releases. It covers what pydantic emits (`$ref`, objects, strings with patterns and
lengths, numbers with bounds, arrays, enums, consts, `anyOf`/`oneOf`, null), and `mutated`
turns a conforming value into a near miss (a field dropped, one added, a wrong type), which is
where input validation breaks.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """Values that conform to `schema` (most of the time: patterns and formats are honoured)."""
    if depth > 6:
        return st.none()
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return from_schema(components[name], components, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of(*(from_schema(s, components, depth + 1) for s in schema[key]))
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return _object(schema, components, depth)
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {}), components, depth + 1),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 4), 4),
        )
    return ANY_JSON


def _string(schema: dict[str, Any]) -> Any:
    low, high = schema.get("minLength", 0), min(schema.get("maxLength", 40), 40)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: low <= len(s) <= schema.get("maxLength", 10**9)
        )
    if schema.get("format") == "date-time":
        return st.datetimes().map(lambda d: d.isoformat() + "Z")
    return st.text(min_size=low, max_size=max(low, high))


def _object(schema: dict[str, Any], components: dict[str, Any], depth: int) -> Any:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {name: from_schema(sub, components, depth + 1) for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {name: value for name, value in fields.items() if name in required},
        optional={name: value for name, value in fields.items() if name not in required},
    )


def mutated(value: Any) -> Any:
    """A near miss of a conforming value."""
    if not isinstance(value, dict) or not value:
        return st.just(value) | ANY_JSON
    keys = sorted(value)
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {n: v for n, v in value.items() if n != k}),
        st.text(min_size=1, max_size=8).map(lambda k: value | {k + "_x": 1}),
        st.tuples(st.sampled_from(keys), ANY_JSON).map(lambda kv: value | {kv[0]: kv[1]}),
    )
