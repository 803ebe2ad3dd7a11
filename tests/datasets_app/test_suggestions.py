"""Suggested labels stored on records (from batch prediction) for the labeling queue."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from datasets_app.models import RecordSuggestion
from datasets_app.services import suggestions
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


# --- the bulk write (one statement per chunk on PostgreSQL, the ORM elsewhere) -----------------
@pytest.fixture(params=["postgresql", "generic"])
def write_path(request, monkeypatch):
    """Both ways of writing: PostgreSQL's INSERT … FROM unnest, and the ORM's bulk_create that
    SQLite uses (run here on PostgreSQL)."""
    if request.param == "generic":
        monkeypatch.setattr(suggestions, "_native_upsert", lambda: False)
    return request.param


ODD_LABELS = ["a,b", "{x}", 'say "hi"', "back\\slash", "NULL", "  spaced  ", "ünï 标签", "a|b"]


def stored(dataset) -> dict[int, tuple]:
    return {
        row[0]: row[1:]
        for row in RecordSuggestion.objects.filter(dataset=dataset).values_list(
            "record_id", "label", "probability", "margin", "entropy", "source"
        )
    }


def test_the_bulk_write_keeps_every_value_as_given(write_path, monkeypatch):
    monkeypatch.setattr(suggestions, "STORE_BATCH", 3)  # several chunks
    monkeypatch.setattr(suggestions, "SQLITE_BATCH", 3)
    dataset = DatasetFactory()
    records = [RecordFactory(dataset=dataset) for _ in ODD_LABELS]
    predictions = [
        {
            "record_id": record.id,
            "label": label,
            "probability": 0.1 * index if index % 3 else None,
            "margin": 0.05 * index if index % 2 else None,
            "entropy": 0.25 * index,
        }
        for index, (record, label) in enumerate(zip(records, ODD_LABELS, strict=True))
    ]
    outcome = record_suggestions_store(dataset=dataset, predictions=predictions, source="v1")
    assert outcome == {"stored": len(ODD_LABELS), "skipped": 0}
    assert stored(dataset) == {
        item["record_id"]: (
            item["label"],
            pytest.approx(item["probability"]) if item["probability"] is not None else None,
            pytest.approx(item["margin"]) if item["margin"] is not None else None,
            pytest.approx(item["entropy"]),
            "v1",
        )
        for item in predictions
    }


def test_the_bulk_write_clamps_skips_and_replaces(write_path, analyst):
    dataset, other = DatasetFactory(), DatasetFactory()
    kept, replaced, foreign = (
        RecordFactory(dataset=dataset),
        RecordFactory(dataset=dataset),
        RecordFactory(dataset=other),
    )
    record_suggestions_store(
        dataset=dataset,
        predictions=[
            {"record_id": kept.id, "label": "old", "probability": 0.4},
            {"record_id": replaced.id, "label": "old", "probability": 0.4},
        ],
        source="model v1",
    )
    first_written = RecordSuggestion.objects.get(record=kept, source="model v1").updated_at
    outcome = record_suggestions_store(
        dataset=dataset,
        predictions=[
            {"record_id": kept.id, "label": "new", "probability": 1.7, "entropy": float("nan")},
            {"record_id": replaced.id, "label": "", "probability": 0.9},  # no label: skipped
            {"record_id": foreign.id, "label": "x", "probability": 0.9},  # another dataset's
            {"record_id": 10**12, "label": "x"},  # gone
            {"record_id": str(kept.id), "label": "newest", "probability": -0.2, "margin": 0.3},
        ],
        source="model v1",
        user=analyst,
    )
    # The record predicted twice keeps the later prediction; both count as stored.
    assert outcome == {"stored": 2, "skipped": 3}
    row = RecordSuggestion.objects.get(record=kept, source="model v1")
    assert (row.label, row.probability, row.margin, row.entropy) == ("newest", 0.0, 0.3, None)
    assert row.created_by == analyst
    assert row.updated_at > first_written
    assert RecordSuggestion.objects.get(record=replaced).label == "old"  # left as it was
    assert not RecordSuggestion.objects.filter(dataset=other).exists()
    # A newer model's suggestions replace the older model's, in the same transaction.
    outcome = record_suggestions_store(
        dataset=dataset,
        predictions=[{"record_id": replaced.id, "label": "v2", "probability": 0.8}],
        source="model v2",
        replaces_prefix="model ",
    )
    assert outcome == {"stored": 1, "skipped": 0}
    assert stored(dataset) == {replaced.id: ("v2", 0.8, None, None, "model v2")}
