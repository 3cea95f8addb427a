"""The subset of JSON Schema 2020-12 that the server's OpenAPI document uses: a validator
(to hold responses and requests to the document) and hypothesis strategies that generate
bodies from it. No extra dependency: jsonschema and schemathesis are not in requirements.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st

Schema = dict[str, Any]

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_SUPPORTED = {"$ref", "type", "const", "enum", "properties", "required", "additionalProperties",
              "items", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength",
              "pattern", "oneOf", "anyOf", "allOf", "if", "then", "discriminator",
              "description", "default", "title"}


class Validator:
    """Validates instances against schemas of one document (resolving local ``$ref``)."""

    def __init__(self, document: Schema):
        self.document = document

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def errors(self, value: Any, schema: Schema, path: str = "$") -> list[str]:
        schema = self.resolve(schema)
        unknown = set(schema) - _SUPPORTED
        assert not unknown, f"schema keywords this validator does not know: {unknown}"
        out: list[str] = []
        types = schema.get("type")
        if types is not None:
            names = types if isinstance(types, list) else [types]
            if not any(_TYPES[n](value) for n in names):
                return [f"{path}: {value!r:.80} is not of type {types}"]
        if "const" in schema and value != schema["const"]:
            out.append(f"{path}: {value!r:.80} is not {schema['const']!r}")
        if "enum" in schema and value not in schema["enum"]:
            out.append(f"{path}: {value!r:.80} is not one of {schema['enum']}")
        if isinstance(value, dict):
            out += self._object(value, schema, path)
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                out += self.errors(item, schema["items"], f"{path}[{i}]")
        if isinstance(value, str):
            out += _string(value, schema, path)
        if _TYPES["number"](value):
            out += _number(value, schema, path)
        for sub in schema.get("allOf", []):
            out += self.errors(value, sub, path)
        if "anyOf" in schema and not any(not self.errors(value, s, path) for s in schema["anyOf"]):
            out.append(f"{path}: matches none of anyOf")
        if "oneOf" in schema:
            matches = sum(not self.errors(value, s, path) for s in schema["oneOf"])
            if matches != 1:
                out.append(f"{path}: matches {matches} of oneOf, not exactly one")
        if "if" in schema and not self.errors(value, schema["if"], path):
            out += self.errors(value, schema.get("then", {}), path)
        return out

    def _object(self, value: dict, schema: Schema, path: str) -> list[str]:
        out = [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                out += self.errors(item, properties[key], f"{path}.{key}")
            elif extra is False:
                out.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                out += self.errors(item, extra, f"{path}.{key}")
        return out


def _string(value: str, schema: Schema, path: str) -> list[str]:
    out = []
    if len(value) < schema.get("minLength", 0):
        out.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append(f"{path}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{path}: {value!r:.80} does not match {schema['pattern']}")
    return out


def _number(value: float, schema: Schema, path: str) -> list[str]:
    out = []
    if "minimum" in schema and not value >= schema["minimum"]:
        out.append(f"{path}: {value} < {schema['minimum']}")
    if "maximum" in schema and not value <= schema["maximum"]:
        out.append(f"{path}: {value} > {schema['maximum']}")
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
        out.append(f"{path}: {value} <= {schema['exclusiveMinimum']}")
    return out


# --------------------------------------------------------------------------- generation

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def from_schema(validator: Validator, schema: Schema,
                overrides: dict[str, st.SearchStrategy] | None = None) -> st.SearchStrategy:
    """Mostly-valid values of ``schema``; ``overrides`` picks the values of named properties
    (so that ids hit existing tasks and commands are harmless)."""
    overrides = overrides or {}
    schema = validator.resolve(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    types = schema.get("type", "object")
    if isinstance(types, list):
        return st.one_of([from_schema(validator, {**schema, "type": t}, overrides) for t in types])
    if types == "null":
        return st.none()
    if types == "boolean":
        return st.booleans()
    if types == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if types == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum", -1e9))
        return st.floats(low, 1e9, exclude_min="exclusiveMinimum" in schema, allow_nan=False)
    if types == "string":
        if "pattern" in schema and "maxLength" in schema and schema["maxLength"] <= 256:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema["maxLength"])
        return st.text(min_size=schema.get("minLength", 0), max_size=40)
    if types == "array":
        return st.lists(from_schema(validator, schema.get("items", {}), overrides), max_size=3)
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    values = {key: overrides[key] if key in overrides
              else from_schema(validator, sub, overrides) for key, sub in properties.items()}

    @st.composite
    def build(draw):
        chosen = [k for k in properties if k in required or draw(st.booleans())]
        value = {k: draw(values[k]) for k in chosen}
        # allOf: [{if, then}] rules (a parameter per type): make the value follow them
        for rule in schema.get("allOf", []):
            if "if" in rule and not validator.errors(value, rule["if"]):
                then = rule.get("then", {})
                for key in then.get("required", []):
                    if value.get(key) is None:
                        value[key] = draw(values[key])
                for key, sub in then.get("properties", {}).items():
                    if sub.get("type") == "null":
                        value.pop(key, None)
        return value
    return build()
