"""A likely-mislabeled scan end to end on PostgreSQL and Redis: the API starts it, a real Celery
worker on the default queue encodes (tiny BERT), cross-validates and puts the flags up for
review, and the API returns them."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from datasets_app.models import ReviewItem
from models_app.models import BaseModel, MislabeledScan
from tests.conftest import _redis_url, broker_for_this_process
from tests.datasets_app.factories import imported_dataset
from tests.models_app.test_mislabeled import MAPPING, planted_csv
from tests.training_app.tiny_model import save_tiny_bert

pytestmark = pytest.mark.integration


def test_a_worker_scans_a_dataset_and_flags_planted_errors_for_review(
    on_postgres, redis_worker, make_user, tmp_path
):
    worker = redis_worker(queues="default")
    analyst = make_user("analyst")
    text, planted = planted_csv()
    with broker_for_this_process(_redis_url()):
        dataset = imported_dataset(analyst, text, MAPPING, report=False)
    encoder = BaseModel.objects.create(
        name="tiny-bert", source=BaseModel.Source.LOCAL, location=str(save_tiny_bert(tmp_path))
    )
    client = APIClient()
    client.force_authenticate(analyst)

    started = client.post(
        f"/api/v1/datasets/{dataset.pk}/mislabeled-scans/",
        {"base_model": encoder.pk},
        format="json",
    )

    assert started.status_code == 202, started.json()
    deadline = time.monotonic() + 180
    scan = MislabeledScan.objects.get(pk=started.json()["id"])
    while not scan.is_finished and time.monotonic() < deadline:
        time.sleep(0.3)
        scan.refresh_from_db()
    assert scan.status == "succeeded", f"{scan.error_message}\n{worker.log()}"
    body = client.get(f"/api/v1/datasets/{dataset.pk}/mislabeled-scans/{scan.pk}/").json()
    rows = {
        item.record_id
        for item in ReviewItem.objects.filter(dataset=dataset, reason="likely_mislabeled")
    }
    assert len(body["flags"]) == scan.flagged_count == len(rows) > 0
    flagged_rows = set(dataset.records.filter(pk__in=rows).values_list("source_row", flat=True))
    assert len(flagged_rows & planted) >= 0.8 * len(planted)  # as measured in-process: 18 of 20
