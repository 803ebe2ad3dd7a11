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
