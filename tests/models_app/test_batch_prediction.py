"""Batch prediction: the service and the job, run here as a worker would (the worker itself is
in tests/integration/test_batch_prediction_worker.py)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import RecordSuggestion
from models_app import batch_prediction as batch_module
from models_app.batch_prediction import (
    batch_prediction_cancel,
    batch_prediction_execute,
    batch_prediction_start,
    classification_scores,
)
from models_app.models import BatchPrediction, ModelVersion
from models_app.runtime.predictor import Predictor
from tests.conftest import broker_for_this_process
from tests.models_app.batch_helpers import toy_snapshot, toy_version


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    """Services publish their jobs to the Redis test broker; the tests run them here."""
    with broker_for_this_process(redis_url):
        yield


def expected_label(text: str) -> str:
    return "positive" if {"good", "great"} & set(text.lower().split()) else "negative"


def read_output(batch: BatchPrediction) -> str:
    with default_storage.open(batch.output_file, "rb") as handle:
        return handle.read().decode("utf-8")


def test_a_snapshot_split_is_predicted_into_a_csv_with_scores_labels_and_a_summary(
    analyst, version, broker
):
    snapshot = toy_snapshot(rows=40, user=analyst)

    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot, split="test")
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "succeeded", batch.error_message
    assert (batch.rows_total, batch.rows_done, batch.progress) == (20, 20, 100)
    rows = list(csv.DictReader(io.StringIO(read_output(batch))))
    assert list(rows[0]) == [
        "row", "record_id", "text", "label", "prediction", "score",
        "score:negative", "score:positive",
    ]  # fmt: skip
    assert len(rows) == 20
    for row in rows:
        assert row["prediction"] == expected_label(row["text"])
        assert row["label"] == expected_label(row["text"])
        scores = float(row["score:negative"]) + float(row["score:positive"])
        assert scores == pytest.approx(1.0, abs=1e-5)
        assert float(row["score"]) == float(row[f"score:{row['prediction']}"])
    assert batch.summary["rows"] == 20
    assert batch.summary["labelled_rows"] == 20
    assert batch.summary["accuracy"] == 1.0
    assert batch.summary["macro_f1"] == 1.0
    assert batch.summary["predicted_counts"] == {"negative": 10, "positive": 10}


def test_jsonl_output_names_every_class_score(analyst, version, broker):
    snapshot = toy_snapshot(rows=6, user=analyst)

    batch = batch_prediction_start(
        user=analyst, version=version, snapshot=snapshot, output_format="jsonl"
    )
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    lines = [json.loads(line) for line in read_output(batch).splitlines()]
    assert len(lines) == 6
    assert batch.output_file.endswith(".jsonl")
    first = lines[0]
    assert set(first) == {"row", "record_id", "text", "label", "prediction", "score", "scores"}
    assert set(first["scores"]) == {"negative", "positive"}
    assert first["prediction"] == expected_label(first["text"])


def test_csv_cells_a_spreadsheet_would_run_are_escaped(analyst, version, broker):
    snapshot = toy_snapshot(rows=2, user=analyst, extra=[("=HYPERLINK(1) good", "+positive")])

    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    rows = list(csv.DictReader(io.StringIO(read_output(batch))))
    assert rows[-1]["text"] == "'=HYPERLINK(1) good"
    assert rows[-1]["label"] == "'+positive"


def test_an_uploaded_file_is_read_like_a_dataset_import(analyst, version, broker):
    content = (
        "id;review;sentiment\n"
        '1;"a good film; really";positive\n'
        "2;the plot was very;negative\n"
        "3;great story;negative\n"
    ).encode("utf-8-sig")
    upload = SimpleUploadedFile("reviews.csv", content, content_type="text/csv")

    batch = batch_prediction_start(
        user=analyst, version=version, upload=upload, text_column="review"
    )
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "succeeded", batch.error_message
    rows = list(csv.DictReader(io.StringIO(read_output(batch))))
    assert [(r["row"], r["text"], r["label"], r["prediction"]) for r in rows] == [
        ("1", "a good film; really", "positive", "positive"),
        ("2", "the plot was very", "negative", "negative"),
        ("3", "great story", "negative", "positive"),
    ]
    assert batch.summary["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert "record_id" not in rows[0]


def test_a_file_without_a_label_column_gets_predictions_and_no_scores_summary(
    analyst, version, broker
):
    upload = SimpleUploadedFile("texts.csv", b"text\ngood movie\nthe film\n")

    batch = batch_prediction_start(user=analyst, version=version, upload=upload)
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.summary == {
        "rows": 2, "labelled_rows": 0, "predicted_counts": {"negative": 1, "positive": 1},
    }  # fmt: skip


def test_an_unreadable_upload_fails_the_job_with_the_readers_message(analyst, version, broker):
    upload = SimpleUploadedFile("data.csv", b"%PDF-1.7\n\x00\x01\x02binary")

    batch = batch_prediction_start(user=analyst, version=version, upload=upload)
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "failed"
    assert "PDF" in batch.error_message
    assert batch.output_file == ""


def test_a_missing_text_column_is_named_with_the_files_columns(analyst, version, broker):
    upload = SimpleUploadedFile("data.csv", b"body,label\ngood,positive\n")

    batch = batch_prediction_start(
        user=analyst, version=version, upload=upload, text_column="review"
    )
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "failed"
    assert batch.error_message == (
        "The text column 'review' is not in the file. Its columns are: body, label."
    )


def test_predictions_can_be_stored_on_the_records_as_suggestions(analyst, version, broker):
    snapshot = toy_snapshot(rows=12, user=analyst)

    batch = batch_prediction_start(
        user=analyst, version=version, snapshot=snapshot, split="train", store_suggestions=True
    )
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.suggestions_stored == 6
    assert "Stored 6 suggestions" in batch.message
    suggestions = RecordSuggestion.objects.filter(dataset=snapshot.dataset).select_related("record")
    assert suggestions.count() == 6
    for suggestion in suggestions:
        assert suggestion.record.split == "train"
        assert suggestion.label == expected_label(suggestion.record.text)
        assert 0.5 < suggestion.probability <= 1.0
        assert suggestion.source == "toy-sentiment v1"
        assert suggestion.created_by == analyst


def test_predicting_again_replaces_the_versions_suggestions(analyst, version, broker):
    snapshot = toy_snapshot(rows=4, user=analyst)
    for _ in range(2):
        batch = batch_prediction_start(
            user=analyst, version=version, snapshot=snapshot, store_suggestions=True
        )
        batch_prediction_execute(batch_id=batch.id)

    assert RecordSuggestion.objects.filter(dataset=snapshot.dataset).count() == 4


def test_a_cancelled_job_stops_between_chunks_and_writes_no_file(
    analyst, version, broker, monkeypatch
):
    snapshot = toy_snapshot(rows=20, user=analyst)
    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    monkeypatch.setattr(batch_module, "CHUNK_ROWS", 5)
    predict = Predictor.predict

    def predict_then_cancel(self, texts):
        results = predict(self, texts)
        BatchPrediction.objects.get(pk=batch.pk).cancel()  # the user presses Cancel
        return results

    monkeypatch.setattr(Predictor, "predict", predict_then_cancel)

    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "cancelled"
    assert batch.rows_done == 5
    assert batch.output_file == ""
    assert not default_storage.exists(f"predictions/{batch.pk}")


def test_a_job_deleted_while_queued_is_nothing_to_do(analyst, version, broker):
    """Its version was deleted (with its batches) before a worker took the task."""
    batch = batch_prediction_start(user=analyst, version=version, snapshot=toy_snapshot(rows=2))
    BatchPrediction.objects.filter(pk=batch.pk).delete()

    batch_prediction_execute(batch_id=batch.id)  # no BatchPrediction.DoesNotExist

    assert not BatchPrediction.objects.filter(pk=batch.pk).exists()


def test_a_job_cancelled_after_its_last_chunk_stores_no_file(analyst, version, broker, monkeypatch):
    """Cancel pressed while the last rows' output is being written: nothing is stored."""
    batch = batch_prediction_start(user=analyst, version=version, snapshot=toy_snapshot(rows=4))
    close = batch_module._OutputWriter.__exit__

    def close_then_cancel(self, *exc_info):
        close(self, *exc_info)
        BatchPrediction.objects.get(pk=batch.pk).cancel()

    monkeypatch.setattr(batch_module._OutputWriter, "__exit__", close_then_cancel)

    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert (batch.status, batch.output_file) == ("cancelled", "")
    assert not default_storage.exists(f"predictions/{batch.pk}/predictions-{batch.pk}.csv")


def test_a_queued_job_cancelled_never_runs(analyst, version, broker):
    batch = batch_prediction_start(user=analyst, version=version, snapshot=toy_snapshot(rows=2))

    batch_prediction_cancel(user=analyst, batch=batch)
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert (batch.status, batch.rows_done, batch.output_file) == ("cancelled", 0, "")
    with pytest.raises(ValidationError, match="already finished"):
        batch_prediction_cancel(user=analyst, batch=batch)


@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        ({"split": "test", "snapshot": "empty"}, "split", "no records in the test split"),
        ({"split": "holdout"}, "split", "must be one of train, validation, test"),
        ({"upload": "file", "store_suggestions": True}, "store_suggestions", "predict a snapshot"),
        ({"upload": "empty"}, "file", "The file is empty."),
        ({"output_format": "xlsx"}, "output_format", "csv or jsonl"),
        ({"snapshot": None}, "source", "Choose one input"),
    ],
)
def test_bad_requests_are_refused_by_field_and_queue_nothing(
    analyst, version, arguments, field, message
):
    snapshot = toy_snapshot(rows=2, user=analyst)
    values = {"snapshot": snapshot, **arguments}
    if values["snapshot"] == "empty":
        values["snapshot"] = toy_snapshot(rows=1, user=analyst)  # its one record is in test
        values["split"] = "train"
        message = "no records in the train split"
    if values.get("upload") == "file":
        values["snapshot"] = None
        values["upload"] = SimpleUploadedFile("a.csv", b"text\nhello\n")
    elif values.get("upload") == "empty":
        values["snapshot"] = None
        values["upload"] = SimpleUploadedFile("a.csv", b"")

    with pytest.raises(ValidationError) as error:
        batch_prediction_start(user=analyst, version=version, **values)

    assert field in error.value.message_dict
    assert message in " ".join(error.value.message_dict[field])
    assert not BatchPrediction.objects.exists()


def test_a_version_that_is_not_ready_cannot_predict(analyst, version):
    version.status = ModelVersion.Status.FAILED
    version.save()

    with pytest.raises(ValidationError, match="not ready"):
        batch_prediction_start(user=analyst, version=version, snapshot=toy_snapshot(rows=2))

    assert not BatchPrediction.objects.exists()


def test_classification_scores_are_accuracy_and_macro_f1_over_all_classes():
    scores = classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "b"])

    assert scores["accuracy"] == 0.5
    # a: p=1 r=.5 f1=.6667; b: p=1/3 r=1 f1=.5; c: 0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3, abs=1e-5)
    assert scores["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


@pytest.mark.parametrize("source", ["snapshot", "upload"])
def test_input_is_read_and_predicted_in_chunks_without_losing_or_reordering_rows(
    analyst, version, broker, monkeypatch, source
):
    monkeypatch.setattr(batch_module, "READ_ROWS", 3)
    monkeypatch.setattr(batch_module, "CHUNK_ROWS", 2)
    snapshot = toy_snapshot(rows=11, user=analyst)
    texts = list(snapshot.records.order_by("id").values_list("text", flat=True))
    if source == "snapshot":
        batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    else:
        content = "text\n" + "\n".join(texts) + "\n"
        upload = SimpleUploadedFile("texts.csv", content.encode())
        batch = batch_prediction_start(user=analyst, version=version, upload=upload)

    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    rows = list(csv.DictReader(io.StringIO(read_output(batch))))
    assert [row["text"] for row in rows] == texts
    assert [row["prediction"] for row in rows] == [expected_label(text) for text in texts]
    assert (batch.rows_total, batch.rows_done, batch.summary["rows"]) == (11, 11, 11)
