"""A snapshot taken before splits are assigned (issue 9, item 13): it is still taken, but the
page and the API say what it lacks (training refuses it: tests/training_app/
test_untrainable_snapshots.py)."""

from __future__ import annotations

import pytest
from pytest_django.asserts import assertContains, assertNotContains
from rest_framework.test import APIClient

from datasets_app import services
from datasets_app.models import Snapshot
from tests.datasets_app.factories import imported_dataset
from tests.training_app.conftest import make_snapshot

CSV = "text,label\n" + "".join(
    f"text number {n},{'good' if n % 2 else 'bad'}\n" for n in range(1, 1201)
)
MAPPING = {"text_columns": ["text"], "label_column": "label"}
NO_SPLIT_GAP = (
    "None of its 1,200 records has a split yet, so it cannot be trained on. Assign splits on "
    "the dataset, then take a new snapshot."
)


@pytest.fixture
def unsplit(analyst, redis_url):
    """A labeled dataset of 1,200 records, none of them with a split yet."""
    return imported_dataset(analyst, CSV, MAPPING, name="Unsplit", report=False)


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


def test_snapshot_without_splits_is_taken_with_a_warning_saying_what_it_lacks(
    client, analyst, unsplit
):
    client.force_login(analyst)

    response = client.post(f"/datasets/{unsplit.pk}/snapshots/", {"note": ""}, follow=True)

    snapshot = Snapshot.objects.get(dataset=unsplit)
    assert snapshot.split_counts == {"": 1200}
    assertContains(
        response,
        f'<div class="flash flash-warning" role="status">Snapshot v1 created. {NO_SPLIT_GAP}</div>',
        html=True,
    )
    # The snapshot table says it too, counts with separators, and offers no training.
    assertContains(response, "unassigned 1,200")
    assertContains(
        response,
        f'<div class="error-text" data-testid="snapshot-gap">{NO_SPLIT_GAP}</div>',
        html=True,
    )
    assertNotContains(response, "Train on this snapshot")


def test_snapshot_with_all_splits_is_created_without_a_warning(client, analyst, unsplit):
    client.force_login(analyst)
    services.dataset_split(dataset=unsplit, user=analyst, ratios=(0.8, 0.1, 0.1))

    response = client.post(f"/datasets/{unsplit.pk}/snapshots/", {"note": ""}, follow=True)

    assertContains(
        response,
        '<div class="flash flash-success" role="status">Snapshot v1 created.</div>',
        html=True,
    )
    assertNotContains(response, 'data-testid="snapshot-gap"')
    assertContains(response, 'data-testid="train-on-snapshot"')


def test_api_answers_a_new_snapshot_with_what_it_lacks(api, unsplit):
    response = api.post(f"/api/v1/datasets/{unsplit.pk}/snapshots/", {}, format="json")

    assert response.status_code == 201
    assert response.json()["has_train_split"] is False
    assert response.json()["warnings"] == [NO_SPLIT_GAP]


def test_gaps_name_the_missing_splits_and_records_left_out(analyst):
    no_test = make_snapshot(user=analyst, name="No test", test=0)
    complete = make_snapshot(user=analyst, name="Complete")
    partly = make_snapshot(user=analyst, name="Partly")
    partly.split_counts = {**partly.split_counts, "": 1}
    unlabeled = make_snapshot(user=analyst, name="Unlabeled", labels=False)

    assert no_test.training_gaps == [
        "It has no test records, so it cannot be trained on (training needs train, validation "
        "and test). Assign splits on the dataset, then take a new snapshot."
    ]
    assert complete.training_gaps == []
    assert partly.training_gaps == ["1 record has no split; training leaves them out."]
    assert unlabeled.training_gaps == [
        "No record has a label yet: label the records before training on them."
    ]
