"""Likely-mislabeled scans: the service and the job (run here as a worker would), on a small
imported dataset with label errors planted on purpose, encoded by a tiny BERT built from a
config; one test on the bundled MiniLM and real TREC questions."""

from __future__ import annotations

import csv
import io
import random

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from datasets_app.models import ReviewItem
from models_app import mislabeled
from models_app.label_issues import precision_recall
from models_app.mislabeled import (
    mislabeled_flags,
    mislabeled_scan_cancel,
    mislabeled_scan_execute,
    mislabeled_scan_start,
)
from models_app.models import BaseModel, MislabeledScan
from tests.conftest import broker_for_this_process
from tests.datasets_app.factories import imported_dataset
from tests.paths import SHARED_DATA
from tests.training_app.tiny_model import save_tiny_bert

MAPPING = {"text_columns": ["text"], "label_column": "label"}
POSITIVE = ("good", "great", "fine")
NEGATIVE = ("bad", "awful", "poor")
FILLER = ("this", "is", "a", "the", "movie")


@pytest.fixture
def broker(redis_url, settings):
    """Jobs publish to the Redis test broker; the tests run them here. The heartbeat thread
    beats on a connection of its own, which cannot see this test's uncommitted job row and
    would take the scan for cancelled: it stays quiet here (the worker tests cover it)."""
    settings.JOB_HEARTBEAT_INTERVAL_SECONDS = 600
    with broker_for_this_process(redis_url):
        yield


@pytest.fixture
def tiny_encoder(db, tmp_path_factory):
    folder = save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"))
    return BaseModel.objects.create(
        name="tiny-bert", source=BaseModel.Source.LOCAL, location=str(folder)
    )


def planted_csv(*, rows: int = 200, flipped: float = 0.1, seed: int = 3) -> tuple[str, set[int]]:
    """Toy sentiment texts labeled by their word, with a share of labels flipped: the CSV and
    the 1-based rows flipped."""
    rng = random.Random(seed)  # noqa: S311 test data, not secrets
    planted = set(rng.sample(range(1, rows + 1), round(rows * flipped)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label"])
    for row in range(1, rows + 1):
        positive = row % 2 == 0
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        words = [*rng.sample(FILLER, 3), word, str(row % 10)]
        rng.shuffle(words)
        label = "positive" if positive != (row in planted) else "negative"
        writer.writerow([" ".join(words), label])
    return out.getvalue(), planted


def flagged_rows(scan: MislabeledScan) -> set[int]:
    from datasets_app.models import Record

    ids = [flag["record_id"] for flag in mislabeled_flags(scan=scan, limit=10_000)]
    return set(Record.objects.filter(pk__in=ids).values_list("source_row", flat=True))


def test_a_scan_flags_most_planted_errors_for_review_with_the_true_label(
    analyst, broker, tiny_encoder
):
    text, planted = planted_csv()
    dataset = imported_dataset(analyst, text, MAPPING, report=False)

    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    mislabeled_scan_execute(scan_id=scan.pk)

    scan.refresh_from_db()
    assert scan.status == "succeeded", scan.error_message
    assert (scan.records_total, scan.records_done, scan.progress) == (200, 200, 100)
    precision, recall = precision_recall(flagged_rows(scan), planted)
    # Measured 1.0 and 0.9 (18 of the 20 planted errors, nothing else).
    assert precision >= 0.9
    assert recall >= 0.8
    assert scan.flagged_count == ReviewItem.objects.filter(dataset=dataset).count()
    assert scan.message == f"Flagged {scan.flagged_count} of 200 records as likely mislabeled."
    flags = mislabeled_flags(scan=scan)
    assert [flag["rank"] for flag in flags] == list(range(1, len(flags) + 1))
    for flag in flags:
        assert {flag["given_label"], flag["suggested_label"]} == {"positive", "negative"}
        assert flag["status"] == "open"
        assert flag["score"] == flag["given_probability"] < 0.5
    item = ReviewItem.objects.get(pk=flags[0]["review_item_id"])
    assert item.reason == "likely_mislabeled"
    assert item.detail["scan"] == scan.pk
    assert scan.summary["labels"] == ["negative", "positive"]
    assert scan.summary["baseline_flagged"] >= scan.flagged_count
    assert scan.summary["out_of_fold_accuracy"] > 0.8


def test_a_second_scan_updates_the_open_review_items_instead_of_doubling_them(
    analyst, broker, tiny_encoder
):
    text, _ = planted_csv(rows=60)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    first = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    mislabeled_scan_execute(scan_id=first.pk)

    second = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    mislabeled_scan_execute(scan_id=second.pk)

    second.refresh_from_db()
    assert second.flagged_count
    items = ReviewItem.objects.filter(dataset=dataset, reason="likely_mislabeled")
    assert items.count() == second.flagged_count
    assert {item.detail["scan"] for item in items} == {second.pk}
    assert mislabeled_flags(scan=first) == []


def test_a_scan_cancelled_while_running_flags_nothing(analyst, broker, tiny_encoder, monkeypatch):
    text, _ = planted_csv(rows=60)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    original = mislabeled._report

    def cancel_on_first_fold(scan_row, progress, message):
        if message.startswith("Cross-validated"):
            MislabeledScan.objects.get(pk=scan_row.pk).cancel()
        return original(scan_row, progress, message)

    monkeypatch.setattr(mislabeled, "_report", cancel_on_first_fold)
    mislabeled_scan_execute(scan_id=scan.pk)

    scan.refresh_from_db()
    assert scan.status == "cancelled"
    assert not ReviewItem.objects.filter(dataset=dataset).exists()


def test_cancel_refuses_a_finished_scan(analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    mislabeled_scan_cancel(user=analyst, scan=scan)

    with pytest.raises(ValidationError, match="already finished"):
        mislabeled_scan_cancel(user=analyst, scan=scan)

    mislabeled_scan_execute(scan_id=scan.pk)  # the worker finds it cancelled: nothing runs
    scan.refresh_from_db()
    assert (scan.status, scan.attempts) == ("cancelled", 0)


def test_a_second_scan_is_refused_while_one_is_queued(analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)

    with pytest.raises(ValidationError, match="already queued or running"):
        mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)

    assert MislabeledScan.objects.count() == 1


def test_too_few_labeled_records_are_refused_before_anything_is_queued(
    analyst, broker, tiny_encoder
):
    rows = "\n".join(f"text {i},{'a' if i % 2 else 'b'}" for i in range(12))
    dataset = imported_dataset(analyst, f"text,label\n{rows}\n", MAPPING, report=False)

    with pytest.raises(ValidationError, match="at least 20 labeled records; this dataset has 12"):
        mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)

    assert not MislabeledScan.objects.exists()


def test_a_multi_label_dataset_is_refused(analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    dataset.label_multiple = True
    dataset.save()

    with pytest.raises(ValidationError, match="several labels per record"):
        mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)


def test_a_hub_base_model_is_refused(analyst, broker):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    hub = BaseModel.objects.create(name="bert", source=BaseModel.Source.HUB, location="bert-base")

    with pytest.raises(ValidationError, match="scans run offline from a folder"):
        mislabeled_scan_start(user=analyst, dataset=dataset, base_model=hub)


def test_annotators_may_not_start_a_scan(make_user, analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)

    with pytest.raises(PermissionDenied, match="Your role \\(annotator\\) cannot change datasets"):
        mislabeled_scan_start(user=make_user("annotator"), dataset=dataset)

    assert not MislabeledScan.objects.exists()


def test_the_bundled_minilm_flags_flipped_trec_questions(analyst, broker):
    trec = SHARED_DATA / "trec" / "train.csv"
    if not trec.exists():
        pytest.skip(f"{trec} is not on this machine")
    with trec.open(newline="", encoding="utf-8") as handle:
        rows = [row for _, row in zip(range(400), csv.DictReader(handle), strict=False)]
    labels = sorted({row["label"] for row in rows})
    rng = random.Random(11)  # noqa: S311 test data, not secrets
    planted = set(rng.sample(range(1, len(rows) + 1), 20))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label"])
    for number, row in enumerate(rows, start=1):
        label = row["label"]
        if number in planted:
            label = rng.choice([other for other in labels if other != label])
        writer.writerow([row["text"], label])
    dataset = imported_dataset(analyst, out.getvalue(), MAPPING, report=False)

    scan = mislabeled_scan_start(user=analyst, dataset=dataset)  # the default: bundled MiniLM
    mislabeled_scan_execute(scan_id=scan.pk)

    scan.refresh_from_db()
    assert scan.status == "succeeded", scan.error_message
    assert scan.base_model.name == "all-MiniLM-L6-v2"
    precision, recall = precision_recall(flagged_rows(scan), planted)
    # Measured on these 400 rows: precision 0.51, recall 1.0 (39 flags; the argmax rule flagged
    # 109). With all 5,452 questions the model is better and so is precision (the benchmark).
    assert precision >= 0.4
    assert recall >= 0.85
    assert scan.flagged_count < scan.summary["baseline_flagged"] / 2


# --------------------------------------------------------------------------- the page


def test_the_page_starts_a_scan_and_then_lists_its_flags(client_as, analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=60)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    BaseModel.objects.filter(is_default=True).update(is_default=False)
    BaseModel.objects.filter(pk=tiny_encoder.pk).update(is_default=True)
    client = client_as("analyst")

    empty = client.get(f"/models/datasets/{dataset.pk}/mislabeled/").content.decode()
    response = client.post(f"/models/datasets/{dataset.pk}/mislabeled/start/", follow=True)

    assert 'data-testid="mislabeled-empty"' in empty
    scan = MislabeledScan.objects.get(dataset=dataset)
    assert scan.base_model == tiny_encoder
    page = response.content.decode()
    assert "The scan is queued; its progress shows below." in page
    assert 'data-testid="job-progress"' in page
    assert 'data-testid="mislabeled-cancel"' in page

    mislabeled_scan_execute(scan_id=scan.pk)
    page = client.get(f"/models/datasets/{dataset.pk}/mislabeled/").content.decode()

    scan.refresh_from_db()
    assert scan.flagged_count
    assert page.count('data-testid="flag-row"') == scan.flagged_count
    assert f"{scan.flagged_count} likely mislabeled record" in page
    assert 'data-testid="mislabeled-start"' in page


def test_the_page_says_why_a_scan_cannot_start(client_as, analyst, broker):
    rows = "\n".join(f"text {i},{'a' if i % 2 else 'b'}" for i in range(12))
    dataset = imported_dataset(analyst, f"text,label\n{rows}\n", MAPPING, report=False)

    response = client_as("analyst").post(
        f"/models/datasets/{dataset.pk}/mislabeled/start/", follow=True
    )

    assert "A scan needs at least 20 labeled records; this dataset has 12." in (
        response.content.decode()
    )
    assert not MislabeledScan.objects.exists()


def test_the_page_cancels_a_queued_scan(client_as, analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)

    response = client_as("analyst").post(
        f"/models/datasets/{dataset.pk}/mislabeled/{scan.pk}/cancel/", follow=True
    )

    scan.refresh_from_db()
    assert scan.status == "cancelled"
    assert "The scan was cancelled; nothing was flagged." in response.content.decode()


def test_annotators_and_viewers_may_not_open_the_page(client_as, analyst, broker):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)

    for role in ("annotator", "viewer"):
        client = client_as(role)
        assert client.get(f"/models/datasets/{dataset.pk}/mislabeled/").status_code == 403
        start = client.post(f"/models/datasets/{dataset.pk}/mislabeled/start/")
        assert start.status_code == 403
    assert not MislabeledScan.objects.exists()


# --------------------------------------------------------------------------- the API


def test_the_api_starts_a_scan_and_returns_it_with_its_flags(
    api_client_as, analyst, broker, tiny_encoder
):
    text, _ = planted_csv(rows=60)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    client = api_client_as("analyst")
    url = f"/api/v1/datasets/{dataset.pk}/mislabeled-scans/"

    started = client.post(url, {"base_model": tiny_encoder.pk, "folds": 3}, format="json")

    assert started.status_code == 202, started.json()
    scan_id = started.json()["id"]
    assert started.json()["status"] == "queued"
    assert started.json()["folds"] == 3
    mislabeled_scan_execute(scan_id=scan_id)
    detail = client.get(f"{url}{scan_id}/").json()
    assert detail["scan"]["status"] == "succeeded"
    assert len(detail["flags"]) == detail["scan"]["flagged_count"] > 0
    assert detail["flags"][0]["rank"] == 1
    assert detail["flags"] == mislabeled_flags(scan=MislabeledScan.objects.get(pk=scan_id))
    assert [scan["id"] for scan in client.get(url).json()] == [scan_id]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"folds": 1}, "folds", "greater than or equal to 2"),
        ({"base_model": 999999}, "base_model", "There is no such base model."),
    ],
)
def test_the_api_refuses_bad_input_naming_the_field(
    api_client_as, analyst, broker, body, field, message
):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)

    response = api_client_as("analyst").post(
        f"/api/v1/datasets/{dataset.pk}/mislabeled-scans/", body, format="json"
    )

    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"][field])
    assert not MislabeledScan.objects.exists()


def test_the_api_cancels_once_and_refuses_annotators(api_client_as, analyst, broker, tiny_encoder):
    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    url = f"/api/v1/datasets/{dataset.pk}/mislabeled-scans/{scan.pk}/cancel/"

    first = api_client_as("analyst").post(url)
    second = api_client_as("analyst").post(url)
    refused = api_client_as("annotator").get(f"/api/v1/datasets/{dataset.pk}/mislabeled-scans/")

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert second.status_code == 400
    assert second.json()["detail"] == "This scan has already finished."
    assert refused.status_code == 403


# --------------------------------------------------------------------------- crash safety


def test_a_scan_whose_worker_went_silent_is_run_again_once_then_failed(
    analyst, broker, tiny_encoder
):
    from datetime import timedelta

    from django.utils import timezone

    from lepton_web.jobs import jobs_sweep

    text, _ = planted_csv(rows=40)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    later = timezone.now() + timedelta(minutes=5)

    assert scan.claim()  # a worker took it and died: no heartbeat since
    assert jobs_sweep(now=later).get("requeued") == 1
    scan.refresh_from_db()
    assert scan.status == "queued"
    assert scan.claim()  # the second worker dies too
    jobs_sweep(now=later)

    scan.refresh_from_db()
    assert scan.status == "failed"
    assert "stopped responding 2 times" in scan.error_message
    assert not ReviewItem.objects.filter(dataset=dataset).exists()


def test_records_relabeled_while_the_scan_ran_are_not_flagged(
    analyst, broker, tiny_encoder, monkeypatch
):
    from datasets_app.models import Record

    text, planted = planted_csv()
    dataset = imported_dataset(analyst, text, MAPPING, report=False)
    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    fixed = Record.objects.filter(dataset=dataset, source_row__in=planted)
    original = mislabeled._report

    def relabel_before_storing(scan_row, progress, message):
        if message.startswith("Putting"):  # someone corrects the planted errors meanwhile
            for record in fixed:
                record.label = "positive" if record.label == "negative" else "negative"
                record.save(update_fields=["label"])
        return original(scan_row, progress, message)

    monkeypatch.setattr(mislabeled, "_report", relabel_before_storing)
    mislabeled_scan_execute(scan_id=scan.pk)

    scan.refresh_from_db()
    assert scan.status == "succeeded"
    assert flagged_rows(scan).isdisjoint(planted)
    assert scan.flagged_count == len(flagged_rows(scan))


def test_a_large_dataset_is_scanned_on_a_random_sample_and_says_so(
    client_as, analyst, broker, tiny_encoder, monkeypatch
):
    monkeypatch.setattr(mislabeled, "MAX_SCAN_RECORDS", 50)
    text, _ = planted_csv(rows=120)
    dataset = imported_dataset(analyst, text, MAPPING, report=False)

    scan = mislabeled_scan_start(user=analyst, dataset=dataset, base_model=tiny_encoder)
    mislabeled_scan_execute(scan_id=scan.pk)

    scan.refresh_from_db()
    assert scan.status == "succeeded", scan.error_message
    assert (scan.records_total, scan.records_done) == (50, 50)
    assert scan.summary["records_labeled"] == 120
    assert scan.summary["sampled"] is True
    page = client_as("analyst").get(f"/models/datasets/{dataset.pk}/mislabeled/")
    assert "a random sample of all 120" in page.content.decode()
