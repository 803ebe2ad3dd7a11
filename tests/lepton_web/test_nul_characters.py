"""A NUL character anywhere in the input is a 400 naming the field, never a 500 (issue 9, item 7).

PostgreSQL refuses NUL in text, so any that reached a query used to crash the request
(``GET /api/v1/datasets/{id}/records/?search=%00`` was a 500). The check runs before any view,
form or serializer, so the field named is the one holding the NUL, whatever else is wrong.
"""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from datasets_app.models import Dataset
from lepton_web.models import WorkerCheck
from tests.datasets_app.factories import imported_dataset
from training_app.models import TrainingRun

MESSAGE = (
    "This value contains a NUL character (\\x00), which is not allowed. Remove it and try again."
)
FILTERS = ("search", "label", "split", "flag")


def refusal(field: str) -> dict:
    return {"detail": f"{field}: {MESSAGE}", "errors": {field: [MESSAGE]}}


@pytest.fixture
def dataset(analyst, redis_url) -> Dataset:
    return imported_dataset(
        analyst,
        "text,label\nwhere is my card,card\nreset my PIN,pin\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


@pytest.mark.parametrize("field", FILTERS)
def test_records_api_refuses_a_filter_with_nul_naming_it(api, dataset, field):
    response = api.get(f"/api/v1/datasets/{dataset.pk}/records/", {field: "card\x00"})

    assert response.status_code == 400
    assert response.json() == refusal(field)


def test_records_api_still_filters_without_nul(api, dataset):
    response = api.get(f"/api/v1/datasets/{dataset.pk}/records/", {"label": "card"})

    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["where is my card"]


def test_a_query_parameter_name_with_nul_is_refused(api, dataset):
    response = api.get(f"/api/v1/datasets/{dataset.pk}/records/?se%00arch=card")

    assert response.status_code == 400
    assert response.json() == refusal("se\\x00arch")


@pytest.mark.parametrize("field", FILTERS)
def test_records_page_refuses_a_filter_with_nul_naming_it(client, analyst, dataset, field):
    client.force_login(analyst)

    response = client.get(f"/datasets/{dataset.pk}/records/", {field: "\x00"})

    assert response.status_code == 400
    assert "text/html" in response["Content-Type"]
    content = response.content.decode()
    assert f"The field “{field}” contains a NUL character" in content


def test_html_form_with_nul_is_refused_and_changes_nothing(client, analyst, dataset):
    client.force_login(analyst)
    before = Dataset.objects.values("label_schema").get(pk=dataset.pk)

    response = client.post(f"/datasets/{dataset.pk}/labels/", {"labels": "card\npin\x00"})

    assert response.status_code == 400
    assert "The field “labels” contains a NUL character" in response.content.decode()
    assert Dataset.objects.values("label_schema").get(pk=dataset.pk) == before


def test_nested_json_value_with_nul_is_named_by_its_path_before_other_checks(api):
    # Everything else here is wrong too (no snapshot, an unknown base model): the NUL is
    # reported, by its path, because it is checked first.
    body = {"base_model": "no/such-model", "params": {"note": ["fine", "bad\x00"]}}

    response = api.post("/api/v1/runs/", body, format="json")

    assert response.status_code == 400
    assert response.json() == refusal("params.note.1")
    assert not TrainingRun.objects.exists()


def test_json_key_with_nul_is_named(api):
    response = api.post(
        "/api/v1/worker-checks/",
        data=json.dumps({"queue": "default", "extra": {"a\x00b": 1}}),
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json() == refusal("extra.a\\x00b")
    assert not WorkerCheck.objects.exists()


def test_form_encoded_api_field_with_nul_is_named(api):
    response = api.post("/api/v1/worker-checks/", {"queue": "default\x00", "steps": "2"})

    assert response.status_code == 400
    assert response.json() == refusal("queue")
    assert not WorkerCheck.objects.exists()


def test_multipart_api_field_with_nul_is_named(api):
    upload = SimpleUploadedFile("data.csv", b"text,label\nhi,a\n", content_type="text/csv")

    response = api.post(
        "/api/v1/datasets/", {"file": upload, "name": "my\x00data"}, format="multipart"
    )

    assert response.status_code == 400
    assert response.json() == refusal("name")
    assert not Dataset.objects.exists()


def test_file_content_with_nul_bytes_is_not_mistaken_for_a_field(api):
    """Only text fields are checked; a file may hold any bytes (a .gz does)."""
    upload = SimpleUploadedFile("data.csv", b"text,label\nhi\x00,a\n", content_type="text/csv")

    response = api.post("/api/v1/datasets/", {"file": upload, "name": "ok"}, format="multipart")

    assert response.status_code == 201
    assert Dataset.objects.get().name == "ok"
