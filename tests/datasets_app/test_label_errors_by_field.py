"""A refused label or label list is a 400 naming its field, as every other bad input of the
API is (these were {"non_field_errors": [...]}, so a client could not tell which value to
fix); the pages show the same sentences as before."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")

CSV = "text,label\nfirst,pos\nsecond,\nthird,neg\n"
MAPPING = {"text_columns": ["text"], "label_column": "label"}


@pytest.fixture
def setup(analyst):
    dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
    api = APIClient()
    api.force_authenticate(analyst)
    return api, f"/api/v1/datasets/{dataset.pk}", dataset.records.order_by("id").first().pk


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("meh", '"meh" is not one of this dataset\'s labels ("neg", "pos").'),
    ],
)
def test_a_refused_label_is_named_by_field(setup, label, message):
    api, base, record_id = setup

    response = api.post(f"{base}/records/{record_id}/label/", {"label": label}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == ["label"]
    assert body["errors"]["label"][0].startswith(message)
    assert body["detail"].startswith(message)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["pos", "pos", "neg"], 'The label "pos" is listed twice.'),
        (["", "  "], "Give at least one label, one per line."),
        (["x" * 501], 'The label "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" is longer than 500'),
    ],
)
def test_a_refused_label_list_is_named_by_field(setup, labels, message):
    api, base, _ = setup

    response = api.put(f"{base}/label-schema/", {"labels": labels}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == ["labels"]
    assert body["errors"]["labels"][0].startswith(message)


def test_the_label_page_shows_the_sentence_itself(client, analyst, setup):
    _, base, _ = setup
    dataset_id = base.rsplit("/", 1)[1]
    client.force_login(analyst)

    page = client.post(f"/datasets/{dataset_id}/labels/", {"labels": "pos\npos\nneg"})

    assert page.status_code == 400
    assert "The label &quot;pos&quot; is listed twice." in page.content.decode()
    assert "{&#x27;labels&#x27;" not in page.content.decode()
