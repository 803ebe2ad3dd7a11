"""Suggested labels stored on records (from batch prediction) for the labeling queue."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from datasets_app.models import RecordSuggestion
from datasets_app.services.suggestions import record_suggestions_store
from tests.datasets_app.factories import DatasetFactory, RecordFactory

pytestmark = pytest.mark.django_db


def test_suggestions_are_stored_on_the_dataset_records(analyst):
    dataset = DatasetFactory()
    first, second = RecordFactory(dataset=dataset), RecordFactory(dataset=dataset)

    outcome = record_suggestions_store(
        dataset=dataset,
        predictions=[
            {"record_id": first.id, "label": "positive", "probability": 0.91},
            {"record_id": second.id, "label": "negative", "probability": 0.6},
        ],
        source="sentiment v2",
        user=analyst,
    )

    assert outcome == {"stored": 2, "skipped": 0}
    stored = {s.record_id: (s.label, s.probability, s.source) for s in first.suggestions.all()}
    assert stored == {first.id: ("positive", 0.91, "sentiment v2")}
    assert second.suggestions.get().label == "negative"
    assert second.suggestions.get().created_by == analyst


def test_storing_a_source_again_replaces_its_suggestions_and_keeps_other_sources():
    dataset = DatasetFactory()
    record = RecordFactory(dataset=dataset)
    record_suggestions_store(
        dataset=dataset, predictions=[{"record_id": record.id, "label": "a", "probability": 0.5}],
        source="v1",
    )  # fmt: skip
    record_suggestions_store(
        dataset=dataset, predictions=[{"record_id": record.id, "label": "b", "probability": 0.7}],
        source="v2",
    )  # fmt: skip

    record_suggestions_store(
        dataset=dataset, predictions=[{"record_id": record.id, "label": "c", "probability": 0.9}],
        source="v1",
    )  # fmt: skip

    assert sorted(record.suggestions.values_list("source", "label", "probability")) == [
        ("v1", "c", 0.9),
        ("v2", "b", 0.7),
    ]


def test_records_of_another_dataset_or_gone_are_skipped():
    dataset = DatasetFactory()
    mine = RecordFactory(dataset=dataset)
    other = RecordFactory()

    outcome = record_suggestions_store(
        dataset=dataset,
        predictions=[
            {"record_id": mine.id, "label": "x", "probability": 1.0},
            {"record_id": other.id, "label": "x", "probability": 1.0},
            {"record_id": 999_999_999, "label": "x", "probability": 1.0},
        ],
        source="v1",
    )

    assert outcome == {"stored": 1, "skipped": 2}
    assert list(RecordSuggestion.objects.values_list("record_id", flat=True)) == [mine.id]


def test_a_suggestion_without_a_source_is_refused():
    dataset = DatasetFactory()
    record = RecordFactory(dataset=dataset)

    with pytest.raises(ValidationError, match="Name the source"):
        record_suggestions_store(
            dataset=dataset, predictions=[{"record_id": record.id, "label": "x"}], source="  "
        )

    assert not RecordSuggestion.objects.exists()
