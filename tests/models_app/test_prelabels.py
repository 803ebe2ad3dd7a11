"""Batch prediction on the best runtime that passed parity, and pre-labels: every unlabeled
record of a dataset predicted and stored as a suggestion with its uncertainty figures."""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from datasets_app.models import Dataset, RecordSuggestion
from models_app import runtime
from models_app.batch_prediction import (
    batch_prediction_execute,
    batch_prediction_start,
    uncertainty,
)
from models_app.deploy import deployment_deploy
from models_app.exports import model_export_execute
from models_app.models import BatchPrediction, ModelExport
from tests.conftest import broker_for_this_process
from tests.datasets_app.factories import DatasetFactory, DatasetJobFactory, RecordFactory
from tests.models_app.batch_helpers import toy_snapshot, toy_version
from tests.models_app.toy_classifier import toy_rows


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


def expected_label(text: str) -> str:
    return "positive" if {"good", "great"} & set(text.lower().split()) else "negative"


def dataset_with(*, labeled: int, unlabeled: int, excluded: int = 0) -> Dataset:
    """A ready dataset whose active import holds labeled, unlabeled and excluded records."""
    dataset = DatasetFactory(status=Dataset.Status.READY)
    job = DatasetJobFactory(dataset=dataset)
    dataset.active_import = job
    dataset.save()
    rows = toy_rows(labeled + unlabeled + excluded, seed=11)
    for index, (text, label) in enumerate(rows):
        RecordFactory(
            dataset=dataset,
            import_run=job,
            text=text,
            label=label if index < labeled else "",
            is_excluded=index >= labeled + unlabeled,
        )
    return dataset


def export(version, kind: str) -> ModelExport:
    row = ModelExport.objects.create(model_version=version, kind=kind)
    model_export_execute(export_id=row.pk)
    row.refresh_from_db()
    assert row.status == "succeeded", row.error_message
    return row


# --- the runtime ------------------------------------------------------------------------------
def test_a_batch_runs_on_the_fastest_runtime_that_passed_parity_and_says_so(
    analyst, version, broker, client_as
):
    version.snapshot = toy_snapshot(rows=12, user=analyst)  # parity runs on its test split
    version.save()
    snapshot = version.snapshot

    plain = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    assert plain.runtime == "pytorch"  # nothing exported yet
    int8 = export(version, "onnx-int8")
    fast = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    assert fast.runtime == "onnx-int8"
    ModelExport.objects.filter(pk=int8.pk).update(agreement=0.5)  # under the parity bar
    fallback = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    assert fallback.runtime == "pytorch"

    for batch in (plain, fast, fallback):
        batch_prediction_execute(batch_id=batch.id)
        batch.refresh_from_db()
        assert batch.status == "succeeded", batch.error_message
    assert fast.runtime == "onnx-int8"
    assert "with ONNX int8" in fast.message
    page = client_as("analyst").get(reverse("models:version_batch_predictions", args=[version.pk]))
    assert 'data-testid="batch-runtime">ONNX int8<' in page.content.decode()
    assert plain.summary["accuracy"] == fast.summary["accuracy"] == 1.0


def test_a_batch_whose_export_went_away_runs_on_pytorch_and_records_it(analyst, version, broker):
    version.snapshot = toy_snapshot(rows=12, user=analyst)
    version.save()
    fp32 = export(version, "onnx-fp32")
    batch = batch_prediction_start(user=analyst, version=version, snapshot=version.snapshot)
    assert batch.runtime == "onnx-fp32"
    fp32.delete()

    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert (batch.status, batch.runtime) == ("succeeded", "pytorch")


# --- pre-labels --------------------------------------------------------------------------------
def test_uncertainty_figures():
    assert uncertainty({"a": 0.7, "b": 0.2, "c": 0.1}) == pytest.approx(
        {
            "probability": 0.7,
            "margin": 0.5,
            "entropy": -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)),
        }
    )
    assert uncertainty({"a": 1.0, "b": 0.0}) == {"probability": 1.0, "margin": 1.0, "entropy": 0.0}


def test_pre_labels_predict_every_unlabeled_record_and_store_uncertainty(analyst, version, broker):
    dataset = dataset_with(labeled=3, unlabeled=9, excluded=2)

    batch = batch_prediction_start(user=analyst, version=version, dataset=dataset)
    assert (batch.source, batch.rows_total, batch.store_suggestions) == ("unlabeled", 9, True)
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "succeeded", batch.error_message
    assert batch.suggestions_stored == 9
    suggestions = list(RecordSuggestion.objects.filter(dataset=dataset).select_related("record"))
    assert len(suggestions) == 9
    for suggestion in suggestions:
        record = suggestion.record
        assert (record.label, record.is_excluded) == ("", False)
        assert suggestion.label == expected_label(record.text)
        assert suggestion.source == "pre-label: toy-sentiment v1"
        assert 0.5 <= suggestion.probability <= 1
        # Two classes: the margin is p - (1 - p), the entropy that of (p, 1 - p).
        p = suggestion.probability
        assert suggestion.margin == pytest.approx(2 * p - 1, abs=1e-5)
        expected_entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p)) if p < 1 else 0.0
        assert suggestion.entropy == pytest.approx(expected_entropy, abs=1e-4)


def test_a_newer_models_pre_labels_replace_the_older_ones_and_keep_other_suggestions(
    analyst, tmp_path_factory, broker
):
    dataset = dataset_with(labeled=0, unlabeled=5)
    first, second = toy_version(tmp_path_factory), toy_version(tmp_path_factory)
    record = dataset.records.first()
    RecordSuggestion.objects.create(dataset=dataset, record=record, label="x", source="manual")

    for version in (first, second):
        batch = batch_prediction_start(user=analyst, version=version, dataset=dataset)
        batch_prediction_execute(batch_id=batch.id)

    sources = set(RecordSuggestion.objects.filter(dataset=dataset).values_list("source", flat=True))
    assert sources == {"manual", f"pre-label: toy-sentiment v{second.version}"}
    assert RecordSuggestion.objects.filter(dataset=dataset).count() == 6


def test_pre_labels_through_an_endpoint_use_its_version_and_runtime(analyst, version, broker):
    dataset = dataset_with(labeled=1, unlabeled=3)
    deployment = deployment_deploy(user=analyst, version=version, slug="sentiment")

    batch = batch_prediction_start(user=analyst, deployment=deployment, dataset=dataset)
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert (batch.model_version, batch.deployment, batch.runtime) == (
        version,
        deployment,
        "pytorch",
    )
    assert batch.suggestions_stored == 3


@pytest.mark.parametrize(
    ("case", "field", "message"),
    [
        ("all labeled", "dataset", "nothing to pre-label"),
        ("not ready", "dataset", "is not ready yet"),
        ("both", "version", "a model version or an endpoint, not both"),
        ("two inputs", "source", "Choose one input"),
    ],
)
def test_bad_pre_label_requests_are_refused_and_queue_nothing(
    analyst, version, case, field, message
):
    dataset = dataset_with(labeled=2, unlabeled=0 if case == "all labeled" else 2)
    arguments: dict = {"version": version, "dataset": dataset}
    if case == "not ready":
        Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.IMPORTING)
        dataset.refresh_from_db()
    elif case == "both":
        arguments["deployment"] = deployment_deploy(user=analyst, version=version, slug="s")
    elif case == "two inputs":
        arguments["snapshot"] = toy_snapshot(rows=2)

    with pytest.raises(ValidationError) as error:
        batch_prediction_start(user=analyst, **arguments)

    assert message in " ".join(error.value.message_dict[field])
    assert not BatchPrediction.objects.exists()


def test_annotators_cannot_start_pre_labels(make_user, version):
    from django.core.exceptions import PermissionDenied

    dataset = dataset_with(labeled=0, unlabeled=2)
    with pytest.raises(PermissionDenied):
        batch_prediction_start(user=make_user("annotator"), version=version, dataset=dataset)
