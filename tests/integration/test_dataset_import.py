"""The import job end to end: a real worker on Redis imports the shared real datasets."""

import time

import pytest
from django.core.files import File

from datasets_app.models import Dataset, DatasetJob, Record
from datasets_app.services import dataset_import_start, dataset_upload
from tests.paths import SHARED_DATA

pytestmark = pytest.mark.integration

SHARED = SHARED_DATA
EXPECTED = {
    "sst2": (67349, {"negative": 29780, "positive": 37569}),
    "financial_phrasebank": (3869, {"negative": 483, "neutral": 2297, "positive": 1089}),
    "trec": (
        5452,
        {
            "abbreviation": 86,
            "description": 1162,
            "entity": 1250,
            "human": 1223,
            "location": 835,
            "numeric": 896,
        },
    ),
    "banking77": (10003, None),
}


def wait_for(job: DatasetJob, timeout: float = 120) -> DatasetJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"Import still {job.status} at {job.progress}%: {job.message}")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not on this machine")
def test_worker_imports_every_shared_dataset_with_exact_counts(redis_worker, make_user):
    redis_worker(queues="default")
    user = make_user("analyst")
    for name, (rows, labels) in EXPECTED.items():
        with (SHARED / name / "train.csv").open("rb") as handle:
            dataset = dataset_upload(user=user, file=File(handle, name="train.csv"), name=name)
        job = wait_for(
            dataset_import_start(
                dataset=dataset,
                user=user,
                mapping={"text_columns": ["text"], "label_column": "label"},
            )
        )

        assert job.status == "succeeded", job.error_message
        dataset.refresh_from_db()
        assert dataset.status == Dataset.Status.READY
        assert dataset.record_count == rows
        assert Record.objects.filter(import_run=job).count() == rows
        if labels is not None:
            assert dataset.label_counts == labels
        else:
            assert len(dataset.label_counts) == 77
            assert sum(dataset.label_counts.values()) == rows
    report = DatasetJob.objects.filter(dataset__name="sst2", kind="report").first()
    assert report is not None
    wait_for(report)
    sst2 = Dataset.objects.get(name="sst2")
    findings = {f["kind"]: f["count"] for f in sst2.quality_report["findings"]}
    assert findings["exact_duplicate"] == 366
