"""Check an API answer against what /api/schema/ says the operation answers (OpenAPI 3.0,
as drf-spectacular writes it: ``nullable`` and ``$ref`` into components)."""

from __future__ import annotations

import json
import re

import jsonschema


def load_schema(client) -> dict:
    response = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    return json.loads(response.content)


def _json_schema(node, components: dict):
    """OpenAPI 3.0 schema -> JSON Schema: nullable becomes a null type, refs are inlined."""
    if isinstance(node, list):
        return [_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return _json_schema(components[name], components)
    out = {k: _json_schema(v, components) for k, v in node.items() if k not in ("nullable",)}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    for key in ("readOnly", "writeOnly", "example", "format"):
        out.pop(key, None)
    return out


def _operation(schema: dict, path: str, method: str) -> tuple[str, dict]:
    for template, operations in schema["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method in operations:
            return template, operations[method]
    raise AssertionError(f"{method.upper()} {path} is not in the schema")


def assert_conforms(schema: dict, response, *, method: str = "get") -> None:
    """The JSON body of ``response`` matches the schema of its operation and status code."""
    path = response.wsgi_request.path
    template, operation = _operation(schema, path, method.lower())
    answers = operation["responses"]
    code = str(response.status_code)
    assert code in answers, f"{method.upper()} {template} answered {code}, not documented"
    content = answers[code].get("content") or {}
    media = content.get("application/json")
    assert media is not None, f"{method.upper()} {template} {code} has no JSON body documented"
    body_schema = _json_schema(media["schema"], schema["components"]["schemas"])
    try:
        jsonschema.validate(response.json(), body_schema)
    except jsonschema.ValidationError as error:
        raise AssertionError(
            f"{method.upper()} {template} {code}: {error.message} at {list(error.absolute_path)}"
        ) from None
