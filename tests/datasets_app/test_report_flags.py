"""The quality report's findings on the records (flags, filters), the fixes of every finding as
the page offers them, and splits that refresh the report."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.db.models import Count
from rest_framework.test import APIClient

from datasets_app.cleaning import IMPORT_FLAGS, REPORT_FLAGS
from datasets_app.forms import SplitForm
from datasets_app.models import CleaningAction, Dataset, DatasetJob, Record
from datasets_app.selectors import FLAG_FILTERS, record_page
from datasets_app.services import (
    dataset_clean_apply,
    dataset_import_cancel,
    dataset_import_execute,
    dataset_import_start,
    dataset_split,
)
from datasets_app.services.cleaning import FIXES
from lepton_web.jobs import BrokerUnavailable
from tests.datasets_app.factories import imported_dataset, run_queued_jobs, run_queued_reports

TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
TEXT_LABEL_SPLIT = {**TEXT_LABEL, "split_column": "split"}
LONG_TEXT = "word " * 300
# One record per finding (source rows in the comments), and enough ordinary 'card' records
# that only 'pin' is a small class.
EVERY_FINDING_ROWS = [
    ("Where is my card?", "card", "train"),  # 1
    ("Where is my card?", "card", "train"),  # 2: exact duplicate of 1
    ("where is my card", "card", "train"),  # 3: near-duplicate of 1
    ("", "card", "train"),  # 4: empty
    ("I lost my PIN", "pin", "train"),  # 5: label conflict with 6; 'pin' is a small class
    ("I lost my PIN", "card", "train"),  # 6: label conflict with 5
    ("CafÃ© opening hours?", "card", "train"),  # 7: mojibake
    ("<b>Card</b> broken &amp; stuck", "card", "train"),  # 8: markup
    ("https://example.com/a/b/c 12345 67890", "card", "train"),  # 9: mostly noise
    ("Top up failed again today", "card", "train"),  # 10
    ("top up failed again today!", "card", "test"),  # 11: near-duplicate of 10, leaks into test
    (LONG_TEXT.strip(), "card", "train"),  # 12: length outlier
    ("My card was declined at the shop", "card", "train"),
    ("The card reader does not work", "card", "validation"),
    ("Can I get a new card please", "card", "train"),
    ("My card expired last month", "card", "test"),
    ("Why was my card blocked", "card", "train"),
    ("How long does a card take to arrive", "card", "train"),
]
EVERY_FINDING_CSV = "text,label,split\n" + "".join(
    f"{text},{label},{split}\n" for text, label, split in EVERY_FINDING_ROWS
)
# Finding -> source rows it marks.
FLAGGED_ROWS = {
    "exact_duplicate": [2],
    "near_duplicate": [3, 11],
    "label_conflict": [5, 6],
    "length_outlier": [12],
    "small_class": [5],
    "mostly_noise": [9],
    "mojibake": [7],
    "markup": [8],
    "split_leakage": [11],
}
# Fix kind -> source rows it changes (each applied to the freshly imported dataset).
FIXED_ROWS = {
    "drop_exact_duplicates": [2],
    "drop_near_duplicates": [3, 11],
    "drop_empty": [4],
    "resolve_conflicts_majority": [5, 6],  # one vote each: a tie excludes both
    "resolve_conflicts_drop": [5, 6],
    "repair_mojibake": [7],
    "strip_markup": [8],
    "exclude_length_outliers": [12],
    "exclude_small_classes": [5],
    "exclude_mostly_noise": [9],
}
RECORD_FIELDS = (
    "source_row",
    "text",
    "original_text",
    "label",
    "original_label",
    "split",
    "flags",
    "is_excluded",
    "exclusion_reason",
)


pytestmark = pytest.mark.usefixtures("redis_broker")


@pytest.fixture
def every_finding(analyst) -> Dataset:
    return imported_dataset(analyst, EVERY_FINDING_CSV, TEXT_LABEL_SPLIT)


def rows(dataset: Dataset, fields=RECORD_FIELDS) -> list[tuple]:
    return list(
        Record.objects.filter(import_run_id=dataset.active_import_id)
        .order_by("source_row")
        .values_list(*fields)
    )


def flags_by_row(dataset: Dataset) -> dict[int, str]:
    return dict(rows(dataset, ("source_row", "flags")))


def source_rows(records) -> list[int]:
    return [record.source_row for record in records]


# --- flags ------------------------------------------------------------------------------------------
def test_report_writes_each_finding_onto_its_records(every_finding):
    expected = {row: [] for row in range(1, len(EVERY_FINDING_ROWS) + 1)}
    expected[4] = ["empty"]  # set at import
    for kind in REPORT_FLAGS:
        for row in FLAGGED_ROWS[kind]:
            expected[row].append(kind)

    assert flags_by_row(every_finding) == {
        row: f",{','.join(tokens)}," if tokens else "" for row, tokens in expected.items()
    }
    assert {f["kind"] for f in every_finding.quality_report["findings"]} == {
        "empty",
        *REPORT_FLAGS,
    }


def test_report_tokens_follow_the_import_tokens_on_the_same_record(analyst, settings):
    settings.DATASET_MAX_TEXT_CHARS = 10
    dataset = imported_dataset(
        analyst, "text,label\nshort,a\nexactly 10,a\na much longer text,b\n,b\n", TEXT_LABEL
    )

    # Both labels have fewer than 10 records, so every record is in the small-class finding.
    assert rows(dataset, ("text", "flags")) == [
        ("short", ",small_class,"),
        ("exactly 10", ",small_class,"),
        ("a much lon", ",truncated,small_class,"),
        ("", ",empty,small_class,"),
    ]


def test_records_excluded_by_a_fix_lose_the_reports_tokens_once_it_runs_again(
    every_finding, analyst, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        dataset_clean_apply(dataset=every_finding, user=analyst, kind="drop_near_duplicates")
    run_queued_reports(every_finding)

    flags = flags_by_row(every_finding)
    assert (flags[3], flags[11]) == ("", "")
    # Row 10 is no longer near-duplicated, but 2 still copies 1 exactly.
    assert (flags[2], flags[10]) == (",exact_duplicate,", "")
    assert not Record.objects.filter(flags__contains=",split_leakage,").exists()


def test_running_the_report_again_changes_no_flags(every_finding):
    before = rows(every_finding)
    job = every_finding.jobs.filter(kind=DatasetJob.Kind.REPORT).latest("id")
    job.status = "queued"
    job.save(update_fields=["status"])

    run_queued_reports(every_finding)

    assert rows(every_finding) == before


def test_every_token_fits_in_the_flags_column_together():
    every_token = "," + ",".join((*IMPORT_FLAGS, *REPORT_FLAGS)) + ","

    assert len(every_token) <= Record._meta.get_field("flags").max_length


def test_every_finding_and_flag_token_is_a_records_filter():
    assert {"empty", *IMPORT_FLAGS, *REPORT_FLAGS} <= set(FLAG_FILTERS)


@pytest.mark.parametrize("kind", REPORT_FLAGS)
def test_record_page_filters_by_each_finding(every_finding, kind):
    page = record_page(dataset=every_finding, flag=kind)

    assert source_rows(page.records) == FLAGGED_ROWS[kind]


@pytest.mark.parametrize("kind", ["mojibake", "split_leakage"])
def test_records_page_and_api_filter_by_a_finding(every_finding, analyst_client, analyst, kind):
    api = APIClient()
    api.force_authenticate(analyst)
    url = f"/api/v1/datasets/{every_finding.pk}/records/"

    body = api.get(url, {"flag": kind}).json()
    page = analyst_client.get(f"/datasets/{every_finding.pk}/records/", {"flag": kind})

    expected_ids = [
        Record.objects.get(import_run_id=every_finding.active_import_id, source_row=row).id
        for row in FLAGGED_ROWS[kind]
    ]
    assert [record["id"] for record in body["results"]] == expected_ids
    assert [record.id for record in page.context["page"].records] == expected_ids
    assert f'<option value="{kind}" selected>{FLAG_FILTERS[kind]}</option>' in (
        page.content.decode()
    )


# --- the page: a button for every fix, a link for every finding ----------------------------------------
def page_fix_kinds(response) -> list[str]:
    html = response.content.decode()
    report = html[html.index('data-testid="quality-report"') :]
    return re.findall(r'<button class="btn" name="kind" value="([^"]+)"', report)


def test_page_offers_a_fix_for_every_finding_with_one_and_each_exists(
    every_finding, analyst_client
):
    response = analyst_client.get(f"/datasets/{every_finding.pk}/")

    kinds = page_fix_kinds(response)
    assert sorted(kinds) == sorted(FIXES)
    findings = every_finding.quality_report["findings"]
    html = response.content.decode()
    blocks = dict(re.findall(r'<div class="finding" data-kind="(\w+)">(.*?)</ul>', html, re.S))
    assert list(blocks) == [finding["kind"] for finding in findings]
    for finding in findings:
        block = blocks[finding["kind"]]
        assert f'href="/datasets/{every_finding.pk}/records/?flag={finding["kind"]}"' in block
        has_button = 'name="kind"' in block
        assert has_button == (finding["fix"] is not None), finding["kind"]
        if finding["fix"] is None:
            assert finding["kind"] == "split_leakage"
            assert 'data-testid="resplit-link"' in block
    assert 'data-testid="resplit-link"' in html
    assert 'id="splits"' in html


def test_each_fix_through_the_page_changes_its_records_and_undo_restores_them(
    every_finding, analyst_client
):
    url = f"/datasets/{every_finding.pk}/"
    kinds = page_fix_kinds(analyst_client.get(url))
    before = rows(every_finding)
    ids = dict(rows(every_finding, ("source_row", "id")))

    for kind in kinds:
        response = analyst_client.post(f"{url}clean/", {"kind": kind})
        assert response.status_code == 302, kind
        (job,) = run_queued_jobs(every_finding)  # the fix runs as a job, as on a worker
        assert job.status == "succeeded", (kind, job.error_message)
        action = CleaningAction.objects.latest("id")
        assert (action.kind, action.undone_at) == (kind, None)
        changed = [row for row, new in zip(before, rows(every_finding), strict=True) if row != new]
        assert [row[0] for row in changed] == FIXED_ROWS[kind], kind
        assert sorted(action.changes.values_list("record_id", flat=True)) == sorted(
            ids[row] for row in FIXED_ROWS[kind]
        )
        assert Record.objects.filter(dataset=every_finding).count() == len(before)

        analyst_client.post(f"{url}clean/undo/")
        assert rows(every_finding) == before, kind
        assert CleaningAction.objects.get(pk=action.pk).undone_at is not None


def test_exclude_fixes_exclude_with_a_reason_and_never_delete(every_finding, analyst):
    ids = dict(rows(every_finding, ("source_row", "id")))

    dataset_clean_apply(dataset=every_finding, user=analyst, kind="exclude_length_outliers")
    dataset_clean_apply(dataset=every_finding, user=analyst, kind="exclude_small_classes")
    dataset_clean_apply(dataset=every_finding, user=analyst, kind="exclude_mostly_noise")

    excluded = list(
        Record.objects.filter(dataset=every_finding, is_excluded=True)
        .order_by("source_row")
        .values_list("id", "exclusion_reason")
    )
    assert excluded == [
        (ids[5], "Label 'pin' has only 1 record (fewer than 10)."),
        (ids[9], "100% of its non-space characters are URLs, digits or markup."),
        (ids[12], "Very long: 1,499 characters, typical is 26."),
    ]
    assert Record.objects.filter(dataset=every_finding).count() == len(EVERY_FINDING_ROWS)


# --- split leakage and splits ------------------------------------------------------------------------
def test_split_leakage_is_in_the_stored_report_after_importing_file_splits(analyst):
    csv_text = (
        "text,label,split\n"
        "Where is my card,card,train\n"
        "I lost my PIN,pin,train\n"
        "Where is my card,card,test\n"
        "Top up failed,top_up,validation\n"
    )
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL_SPLIT)
    train_copy, test_copy = (
        Record.objects.filter(dataset=dataset, text="Where is my card")
        .order_by("source_row")
        .values_list("id", flat=True)
    )

    leakage = next(f for f in dataset.quality_report["findings"] if f["kind"] == "split_leakage")

    assert leakage["count"] == 1
    assert leakage["fix"] is None
    assert leakage["examples"] == [
        {
            "id": test_copy,
            "text": "Where is my card",
            "label": "card",
            "detail": f"In test, but the same text is in train (record {train_copy}).",
        }
    ]
    assert dataset.quality_report["stats"]["split_counts"] == {
        "train": 2,
        "validation": 1,
        "test": 1,
    }


def test_split_form_proposes_a_random_split_when_the_files_splits_leak(every_finding):
    assert SplitForm(dataset=every_finding).initial["mode"] == "random"


def test_split_form_proposes_the_files_splits_of_the_active_import(analyst):
    dataset = imported_dataset(
        analyst, "text,label,split\none,a,train\ntwo,b,test\n", TEXT_LABEL_SPLIT
    )

    assert SplitForm(dataset=dataset).initial["mode"] == "file"


def test_random_split_queues_a_report_without_the_leakage_it_fixed(
    every_finding, analyst, django_capture_on_commit_callbacks
):
    file_counts = {"train": 15, "validation": 1, "test": 2}
    assert every_finding.quality_report["stats"]["split_counts"] == file_counts

    with django_capture_on_commit_callbacks(execute=True):
        dataset_split(dataset=every_finding, user=analyst, ratios=(0.6, 0.2, 0.2), seed=1)

    queued = every_finding.jobs.filter(kind=DatasetJob.Kind.REPORT, status="queued")
    assert queued.count() == 1
    run_queued_reports(every_finding)
    every_finding.refresh_from_db()
    assert "split_leakage" not in {f["kind"] for f in every_finding.quality_report["findings"]}
    new_counts = dict(
        Record.objects.filter(dataset=every_finding).values_list("split").annotate(n=Count("id"))
    )
    assert new_counts != file_counts
    assert every_finding.quality_report["stats"]["split_counts"] == new_counts
    assert not Record.objects.filter(flags__contains=",split_leakage,").exists()


def test_file_split_queues_a_report_too(every_finding, analyst, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        dataset_split(dataset=every_finding, user=analyst, mode="file")

    assert every_finding.jobs.filter(kind=DatasetJob.Kind.REPORT, status="queued").count() == 1


def test_split_stands_when_the_broker_is_down(
    every_finding, analyst, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(job):
        raise BrokerUnavailable

    monkeypatch.setattr(DatasetJob, "enqueue", broker_down)

    with django_capture_on_commit_callbacks(execute=True):
        dataset_split(dataset=every_finding, user=analyst, ratios=(0.6, 0.2, 0.2), seed=1)

    assert not Record.objects.filter(dataset=every_finding, split="").exists()
    assert not every_finding.jobs.filter(kind=DatasetJob.Kind.REPORT, status="queued").exists()


def retry_without_split_column_cancelled(dataset: Dataset, user) -> None:
    """Start a re-import that maps no split column, then cancel it: the records stay, but
    dataset.mapping is the cancelled attempt's."""
    job = dataset_import_start(dataset=dataset, user=user, mapping=TEXT_LABEL)
    dataset_import_cancel(job=job, user=user)
    dataset_import_execute(job_id=job.pk)
    dataset.refresh_from_db()
    assert dataset.mapping["split_column"] is None
    assert dataset.active_import.mapping["split_column"] == "split"


def test_file_split_reads_the_mapping_of_the_active_import_not_of_a_later_attempt(analyst):
    csv_text = "text,label,split\none,a,train\ntwo,b,test\nthree,a,validation\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL_SPLIT, report=False)
    dataset_split(dataset=dataset, user=analyst, ratios=(0.4, 0.3, 0.3), seed=2)
    retry_without_split_column_cancelled(dataset, analyst)

    dataset_split(dataset=dataset, user=analyst, mode="file")

    assert rows(dataset, ("text", "split")) == [
        ("one", "train"),
        ("two", "test"),
        ("three", "validation"),
    ]


def test_split_form_proposes_the_files_splits_of_the_active_import_after_a_cancelled_retry(
    analyst,
):
    dataset = imported_dataset(
        analyst, "text,label,split\none,a,train\ntwo,b,test\n", TEXT_LABEL_SPLIT, report=False
    )
    retry_without_split_column_cancelled(dataset, analyst)

    assert SplitForm(dataset=dataset).initial["mode"] == "file"


def test_file_split_is_refused_when_the_active_import_had_no_split_column(analyst):
    csv_text = "text,label,split\none,a,train\ntwo,b,test\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL_SPLIT)
    dataset_import_cancel(job=job, user=analyst)
    dataset.refresh_from_db()
    assert dataset.mapping["split_column"] == "split"

    with pytest.raises(ValidationError) as error:
        dataset_split(dataset=dataset, user=analyst, mode="file")

    assert error.value.message_dict == {
        "mode": ["The file had no split column mapped. Choose a random split."]
    }
    assert SplitForm(dataset=dataset).initial["mode"] == "random"


@pytest.mark.parametrize("flag", ["exact_duplicate", "truncated", "excluded", "edited"])
def test_flag_filtered_pages_read_the_partial_index_not_the_whole_import(on_postgres, flag):
    """A flag filter asks for a few records of a large import: the page's query must walk the
    partial index of noteworthy records, not every record of the import."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from datasets_app.selectors import record_page
    from tests.datasets_app.factories import DatasetJobFactory

    job = DatasetJobFactory()
    dataset = job.dataset
    dataset.active_import = job
    dataset.save()
    with CaptureQueriesContext(connection) as queries:
        record_page(dataset=dataset, flag=flag, after=5)
    [sql] = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "record_run_noteworthy" in plan, plan
