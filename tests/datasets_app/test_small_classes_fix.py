"""The small-classes fix on a dataset where every label is small (30 intents of 6 examples):
it used to exclude every labeled record, so the next snapshot was refused with 'Every record
is excluded'. It now refuses, says why and changes nothing."""

from __future__ import annotations

import pytest

from datasets_app.models import DatasetJob
from datasets_app.services import dataset_clean_start
from tests.datasets_app.factories import imported_dataset, run_queued_jobs

pytestmark = pytest.mark.usefixtures("redis_broker")
MAPPING = {"text_columns": ["text"], "label_column": "label"}


def csv_of(counts: dict[str, int]) -> str:
    rows = [f"text {label} {i},{label}" for label, count in counts.items() for i in range(count)]
    return "text,label\n" + "\n".join(rows) + "\n"


def test_a_fix_that_would_exclude_every_labeled_record_is_refused(analyst):
    dataset = imported_dataset(analyst, csv_of({f"intent{i}": 6 for i in range(30)}), MAPPING)

    dataset_clean_start(dataset=dataset, user=analyst, kind="exclude_small_classes")
    (job,) = run_queued_jobs(dataset, DatasetJob.Kind.CLEAN)

    assert job.status == "failed"
    assert job.error_message == (
        "Every label has fewer than 10 records, so this fix would exclude every labeled record "
        "and leave nothing to train on. Add records to the small labels or merge them instead."
    )
    assert not dataset.records.filter(is_excluded=True).exists()


def test_small_labels_beside_large_ones_are_still_excluded(analyst):
    dataset = imported_dataset(analyst, csv_of({"big": 12, "tiny": 2}), MAPPING)

    dataset_clean_start(dataset=dataset, user=analyst, kind="exclude_small_classes")
    (job,) = run_queued_jobs(dataset, DatasetJob.Kind.CLEAN)

    assert job.status == "succeeded", job.error_message
    assert set(dataset.records.filter(is_excluded=True).values_list("label", flat=True)) == {"tiny"}
