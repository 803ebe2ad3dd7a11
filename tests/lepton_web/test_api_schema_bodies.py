"""The OpenAPI schema describes the bodies the API really sends: no operation that answers
with JSON is documented as answering with no body (several were, as ``responses={200: None}``:
alias moves, the alias list, archive, version delete, pre-labels and retrain)."""

import json

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_every_success_response_but_204_has_a_body(analyst):
    client = APIClient()
    client.force_authenticate(analyst)
    response = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    schema = json.loads(response.content)

    bodiless = [
        f"{method.upper()} {path} {code}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for code, answer in operation.get("responses", {}).items()
        if code.startswith("2") and code != "204" and not answer.get("content")
    ]

    assert bodiless == []


def test_every_operation_documents_the_one_error_shape(analyst):
    """{"detail": "...", "errors": {...}} is what every refusal answers; the schema said so
    nowhere (predict's 400 and 503 were not documented at all, and several 400s had no
    body)."""
    client = APIClient()
    client.force_authenticate(analyst)
    response = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    schema = json.loads(response.content)
    error = {"$ref": "#/components/schemas/ApiError"}

    missing = [
        f"{method.upper()} {path} {code}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for code in ("400", "401", "403", "404", *(["503"] if method != "get" else []))
        if operation["responses"]
        .get(code, {})
        .get("content", {})
        .get("application/json", {})
        .get("schema")
        != error
    ]

    assert missing == []
    assert set(schema["components"]["schemas"]["ApiError"]["required"]) == {"detail", "errors"}
