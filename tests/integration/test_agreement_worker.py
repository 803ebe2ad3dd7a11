"""The agreement page of a large dataset end to end on Redis: the first time the API answers
202 with the progress of the background count a real Celery worker on the default queue runs,
then the figures; after a label changes, it returns the kept figures marked stale while the
worker counts them again, then the fresh ones."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from datasets_app.models import Record
from datasets_app.services.labeling import (
    label_schema_set,
    labeling_settings_set,
    record_label_set,
)
from tests.conftest import _redis_url, broker_for_this_process
from tests.datasets_app.factories import imported_dataset
from tests.datasets_app.test_agreement_page import CSV, LABELS, MAPPING

pytestmark = pytest.mark.integration


def test_a_worker_counts_a_large_datasets_agreement_first_and_again_after_a_label(
    redis_worker, make_user, settings
):
    settings.AGREEMENT_SYNC_ANNOTATIONS = 5  # these 10 annotations count as a large dataset
    worker = redis_worker(queues="default")
    analyst = make_user("analyst")
    with broker_for_this_process(_redis_url()):
        dataset = imported_dataset(analyst, CSV, MAPPING, report=False)
        dataset = label_schema_set(dataset=dataset, user=analyst, labels=["neg", "pos"])
        dataset = labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
        people = {name: make_user("annotator", username=name) for name in ("ann", "bob", "cy")}
        rows = dict(Record.objects.filter(dataset=dataset).values_list("source_row", "id"))
        for row, labels in LABELS.items():
            for name, label in zip(("ann", "bob", "cy"), labels, strict=True):
                if label:
                    record_label_set(
                        dataset=dataset, user=people[name], record_id=rows[row], label=label
                    )
        client = APIClient()
        client.force_authenticate(analyst)
        url = f"/api/v1/datasets/{dataset.pk}/agreement/"

        counting = client.get(url)  # nothing kept yet: a background job counts them
        deadline = time.monotonic() + 60
        first = counting
        while first.status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.3)
            first = client.get(url)
        first = first.json()
        record_label_set(dataset=dataset, user=people["cy"], record_id=rows[5], label="neg")
        stale = client.get(url).json()
        deadline = time.monotonic() + 60
        fresh = stale
        while fresh["stale"] and time.monotonic() < deadline:
            time.sleep(0.3)
            fresh = client.get(url).json()

    assert counting.status_code == 202
    assert counting.json()["counting"] is True
    assert "stale" in first, worker.log()
    assert first["stale"] is False
    assert first["annotations"] == 10
    assert stale["stale"] is True
    assert stale["annotations"] == 10
    assert stale["recount_started_at"] is not None
    assert fresh["stale"] is False, worker.log()
    assert fresh["annotations"] == 11
    assert fresh["computed_at"] > first["computed_at"]
    pairs = {(p["first"], p["second"]): p["records"] for p in fresh["pairs"]}
    assert pairs[("ann", "cy")] == 2  # records 2 and 5
