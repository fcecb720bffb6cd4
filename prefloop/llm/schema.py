"""Parse a model's JSON reply and check it against the JSON schema that was asked for.

Why our own validator: the schemas the generator and judge send are small (objects of strings, integers, enums,
arrays), and the reply must be checked even when the server claims to enforce the schema (older servers ignore
it, OpenAI-compatible servers differ, ``num_predict`` can cut JSON off). This covers that subset: ``type``
(incl. lists), ``properties``, ``required``, ``additionalProperties: false``, ``enum``, ``const``,
``minimum``/``maximum``, ``minLength``/``maxLength``, ``minItems``/``maxItems``, ``items``, ``anyOf``/``oneOf``.
Unknown keywords are ignored, as JSON Schema says.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prefloop.errors import RunFailed

_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,),
                                       "integer": (int,), "number": (int, float), "boolean": (bool,),
                                       "null": (type(None),)}


class SchemaError(RunFailed, ValueError):
    """The reply is not JSON, or not the asked-for shape; the message names the path."""


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty when it fits)."""
    errors: list[str] = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    for key in ("anyOf", "oneOf"):
        if key in schema and not any(not validate(value, sub, path) for sub in schema[key]):
            errors.append(f"{path}: matches none of the {key} alternatives")
    for sub in schema.get("allOf", []):
        errors.extend(validate(value, sub, path))
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            return errors + [f"{path}: expected {'/'.join(kinds)}, got {type(value).__name__}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing required '{name}'")
        for name, item in value.items():
            if name in props:
                errors.extend(validate(item, props[name], f"{path}.{name}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property '{name}'")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors.extend(validate(item, schema["items"], f"{path}[{i}]"))
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    return errors


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def extract_json(text: str) -> Any:
    """The reply's JSON: the whole text when it parses, else the first ``{...}``/``[...]`` value in it.

    Small local models wrap JSON in prose or code fences; the first complete value is the answer.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
            return value
        except json.JSONDecodeError:
            continue
    raise SchemaError(f"no JSON value in reply: {text[:120]!r}")


def parse_reply(text: str, schema: dict[str, Any]) -> Any:
    """The parsed, validated reply, or ``SchemaError`` saying what is wrong."""
    data = extract_json(text)
    errors = validate(data, schema)
    if errors:
        raise SchemaError("reply does not fit the schema: " + "; ".join(errors[:5]))
    return data



def template(schema: dict[str, Any]) -> str:
    """The reply's shape with a placeholder per value, e.g. ``{"score": <integer from 0 to 100>}``.

    Small models copy a shape far better than they read a schema (SmolLM2 given the schema echoed it back), and a
    placeholder, unlike an example value, does not suggest an answer."""
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "<" + " or ".join(json.dumps(v) for v in schema["enum"]) + ">"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return template(schema[key][0])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        inner = ", ".join(f"{json.dumps(name)}: {template(sub)}" for name, sub in schema.get("properties", {}).items())
        return "{" + inner + "}"
    if kind == "array":
        return "[" + template(schema.get("items", {})) + ", ...]"
    if kind in ("integer", "number") and ("minimum" in schema or "maximum" in schema):
        return f"<{kind} from {schema.get('minimum', '-inf')} to {schema.get('maximum', 'inf')}>"
    return f"<{kind}>"
