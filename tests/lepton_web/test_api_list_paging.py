"""Long lists over the API: limit and offset, the whole count and a next link, a stable order
with ties on the creation time, and filters that name nothing refused by field (a list used to
stop silently at 200 items, or return every row, and an unknown filter was ignored)."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from datasets_app.models import Dataset
from tests.datasets_app.factories import DatasetFactory
from tests.training_app.conftest import make_snapshot, register_tiny_base_model
from training_app.models import TrainingRun

API = "/api/v1"
pytestmark = pytest.mark.django_db


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


def read_all(api, url: str, limit: int) -> tuple[list[int], list[str]]:
    """Follow the Link headers from ``url`` to the end; (ids in order, totals seen)."""
    ids, totals = [], []
    next_url = f"{url}?limit={limit}"
    while next_url:
        response = api.get(next_url)
        assert response.status_code == 200, response.content
        ids.extend(item["id"] for item in response.json())
        totals.append(response["X-Total-Count"])
        link = response.headers.get("Link", "")
        next_url = link[1 : link.index(">")] if link else None
    return ids, totals


def test_datasets_list_pages_through_every_row_once_in_a_stable_order(api, analyst):
    DatasetFactory.create_batch(7, created_by=analyst)
    # Same creation time for all: the order must still be total (ties broken by id).
    Dataset.objects.update(created_at=timezone.now())

    ids, totals = read_all(api, f"{API}/datasets/", limit=3)

    assert ids == sorted(Dataset.objects.values_list("id", flat=True), reverse=True)
    assert totals == ["7", "7", "7"]
    whole = api.get(f"{API}/datasets/")
    assert [d["id"] for d in whole.json()] == ids  # default limit 200: all seven
    assert "Link" not in whole.headers


def test_runs_past_200_are_reachable(api, analyst, tmp_path):
    snapshot = make_snapshot(user=analyst)
    base = register_tiny_base_model(tmp_path)  # rows only: nothing is loaded
    TrainingRun.objects.bulk_create(
        TrainingRun(
            name=f"run {i}",
            snapshot=snapshot,
            base_model=base,
            task="single_label",
            method="full",
            params={},
            created_by=analyst,
        )
        for i in range(205)
    )

    first = api.get(f"{API}/runs/")
    ids, _ = read_all(api, f"{API}/runs/", limit=200)

    assert len(first.json()) == 200
    assert first["X-Total-Count"] == "205"
    assert 'rel="next"' in first["Link"]
    assert len(ids) == len(set(ids)) == 205
    filtered = api.get(f"{API}/runs/", {"status": "queued", "dataset": snapshot.dataset_id})
    assert filtered["X-Total-Count"] == "205"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"dataset": "abc"}, "dataset"),
        ({"dataset": "9" * 30}, "dataset"),
        ({"status": "done"}, "status"),
    ],
)
def test_bad_list_parameters_get_400_by_field(api, params, field):
    response = api.get(f"{API}/runs/", params)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


@pytest.mark.parametrize("url", ["/datasets/", "/runs/", "/searches/", "/model-versions/"])
def test_every_long_list_takes_the_same_paging(api, url):
    assert api.get(f"{API}{url}", {"limit": "x"}).status_code == 400
    response = api.get(f"{API}{url}", {"limit": 5, "offset": 100})
    assert response.status_code == 200
    assert response.json() == []
    assert response["X-Total-Count"] == "0"


def test_the_schema_documents_paging(api):
    import json

    response = api.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    schema = json.loads(response.content)

    operation = schema["paths"]["/api/v1/runs/"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"limit", "offset", "dataset", "status"} <= names
    assert {"X-Total-Count", "Link"} <= set(operation["responses"]["200"]["headers"])
