"""Dataset services: import, cancel, recovery, quality report, cleaning, splits, snapshots, export,
the demo dataset and keyset paging. Jobs are published to the Redis test broker and then run
here, synchronously, by calling the service the task calls."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import factory
import pandas as pd
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Max, Min
from django.utils import timezone

from datasets_app.models import (
    CleaningAction,
    CleaningChange,
    Dataset,
    DatasetJob,
    Record,
    RecordSearch,
    Snapshot,
    SnapshotRecord,
)
from datasets_app.selectors import export_stream, record_page
from datasets_app.services import (
    dataset_clean_apply,
    dataset_clean_undo,
    dataset_delete,
    dataset_detect,
    dataset_import_cancel,
    dataset_import_execute,
    dataset_import_start,
    dataset_job_execute,
    dataset_report_execute,
    dataset_split,
    demo_dataset_load,
    snapshot_create,
)
from lepton_web.jobs import jobs_sweep
from tests.datasets_app.factories import (
    RecordFactory,
    import_now,
    imported_dataset,
    run_queued_reports,
    run_queued_search_index,
    upload,
)

TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
TEXT_LABEL_SPLIT = {**TEXT_LABEL, "split_column": "split"}
ALREADY_RUNNING = "An import of this dataset is already running. Wait for it or cancel it."
CANCELLED = "The import was cancelled; no records from it were kept."
NOTHING_TO_UNDO = "There is no cleaning step to undo."
RATIOS_MESSAGE = "Give three ratios (train, validation, test) that add up to 1."
NO_SPLIT_COLUMN = "The file had no split column mapped. Choose a random split."

# What cleaning may change on a record, and what it must keep.
CLEANING_FIELDS = (
    "source_row",
    "text",
    "original_text",
    "label",
    "original_label",
    "is_excluded",
    "exclusion_reason",
)
FULL_FIELDS = (
    "id",
    "import_run_id",
    "source_row",
    "text",
    "original_text",
    "label",
    "original_label",
    "split",
    "external_id",
    "metadata",
    "flags",
    "is_excluded",
    "exclusion_reason",
)
SNAPSHOT_FIELDS = ("record_id", "source_row", "text", "label", "split")


pytestmark = pytest.mark.usefixtures("redis_broker")


def records(dataset: Dataset, fields=CLEANING_FIELDS) -> list[tuple]:
    """Every record row of the dataset (active or staged, excluded or not), in file order."""
    return list(
        Record.objects.filter(dataset=dataset).order_by("source_row", "id").values_list(*fields)
    )


def record_id(dataset: Dataset, source_row: int) -> int:
    return Record.objects.get(import_run_id=dataset.active_import_id, source_row=source_row).id


# --- import ------------------------------------------------------------------------------------
MAPPED_CSV = (
    "id,text,label,split,source,lang\n"
    "a1,Hello there,greet,train,web,en\n"
    'a2,"Bye, now",bye,dev,app,en\n'
    "a3,How are you,greet,VALID,web,fr\n"
    "a4,See you,bye, Testing ,app,en\n"
    'a5,"Two\nlines",greet,val,web,\n'
)


def test_import_keeps_row_numbers_text_label_split_id_and_unmapped_columns_as_metadata(analyst):
    dataset = imported_dataset(
        analyst, MAPPED_CSV, {**TEXT_LABEL_SPLIT, "id_column": "id"}, report=False
    )

    assert records(
        dataset, ("source_row", "text", "label", "split", "external_id", "metadata")
    ) == [
        (1, "Hello there", "greet", "train", "a1", {"source": "web", "lang": "en"}),
        (2, "Bye, now", "bye", "validation", "a2", {"source": "app", "lang": "en"}),
        (3, "How are you", "greet", "validation", "a3", {"source": "web", "lang": "fr"}),
        (4, "See you", "bye", "test", "a4", {"source": "app", "lang": "en"}),
        (5, "Two\nlines", "greet", "validation", "a5", {"source": "web", "lang": ""}),
    ]
    assert (dataset.status, dataset.status_message, dataset.record_count) == ("ready", "", 5)
    assert dataset.label_counts == {"greet": 3, "bye": 2}
    assert dataset.split_counts == {"test": 1, "train": 1, "validation": 3}
    assert dataset.active_import.status == "succeeded"
    assert dataset.active_import.message.startswith("Imported 5 records in ")


RECORDS_CSV = (
    "text,topic,label\n"
    "Where is my card,cards,card\n"
    "I lost my PIN,security,pin\n"
    "Top up failed,payments,top_up\n"
)


def test_reimport_with_another_mapping_replaces_records_only_when_it_succeeds(analyst, monkeypatch):
    dataset = imported_dataset(analyst, RECORDS_CSV, TEXT_LABEL, report=False)
    first_import = dataset.active_import
    old_texts = ["Where is my card", "I lost my PIN", "Top up failed"]
    seen_while_importing = []
    report = DatasetJob.report

    def spy(job, **kwargs):
        if job.kind == DatasetJob.Kind.IMPORT:
            current = Dataset.objects.get(pk=dataset.pk)
            seen_while_importing.append(
                (
                    current.status,
                    current.active_import_id,
                    [r.text for r in record_page(dataset=current).records],
                    Record.objects.filter(import_run=job).count(),
                )
            )
        return report(job, **kwargs)

    monkeypatch.setattr(DatasetJob, "report", spy)

    job = import_now(
        dataset,
        analyst,
        {"text_columns": ["text", "topic"], "text_separator": " | ", "label_column": "label"},
    )

    # Mid-import: the old records are what everyone sees; the new ones are staged beside them.
    assert seen_while_importing == [("importing", first_import.pk, old_texts, 3)]
    dataset.refresh_from_db()
    assert (dataset.status, dataset.active_import_id, job.status) == ("ready", job.pk, "succeeded")
    assert records(dataset, ("import_run_id", "text", "metadata")) == [
        (job.pk, "Where is my card | cards", {}),
        (job.pk, "I lost my PIN | security", {}),
        (job.pk, "Top up failed | payments", {}),
    ]
    assert not Record.objects.filter(import_run=first_import).exists()


def test_failed_reimport_keeps_the_previous_records_and_status_ready(analyst):
    dataset = imported_dataset(analyst, RECORDS_CSV, TEXT_LABEL, report=False)
    first_import = dataset.active_import
    before = records(dataset, FULL_FIELDS)

    job = import_now(dataset, analyst, {**TEXT_LABEL, "split_column": "topic"})

    summary = (
        "Nothing was imported: 3 problems found. First: Line 2 has split 'cards'. Use train, "
        "validation or test, or leave it empty. Fix the file or change the mapping, then retry."
    )
    assert (job.status, job.error_message) == ("failed", summary)
    assert job.problems == [
        {
            "line": line,
            "column": "topic",
            "message": f"Line {line} has split '{value}'. Use train, validation or test, or leave it empty.",
        }
        for line, value in [(2, "cards"), (3, "security"), (4, "payments")]
    ]
    dataset.refresh_from_db()
    assert (dataset.status, dataset.status_message) == ("ready", summary)
    assert dataset.active_import_id == first_import.pk
    assert (dataset.record_count, dataset.label_counts) == (3, {"card": 1, "pin": 1, "top_up": 1})
    assert records(dataset, FULL_FIELDS) == before


def test_cancelling_a_queued_import_keeps_no_records_and_says_so(analyst):
    dataset = upload(analyst, RECORDS_CSV)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)

    dataset_import_cancel(job=job, user=analyst)
    assert dataset_import_execute(job_id=job.pk) is None  # the worker finds it cancelled

    job.refresh_from_db()
    dataset.refresh_from_db()
    assert (job.status, job.message) == ("cancelled", "Cancelled.")
    assert (dataset.status, dataset.status_message) == ("failed", CANCELLED)
    assert dataset.active_import is None
    assert dataset.record_count == 0
    assert not Record.objects.exists()


def test_cancelling_a_queued_reimport_keeps_the_previous_records(analyst):
    dataset = imported_dataset(analyst, RECORDS_CSV, TEXT_LABEL, report=False)
    before = records(dataset, FULL_FIELDS)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)

    dataset_import_cancel(job=job, user=analyst)
    dataset_import_execute(job_id=job.pk)

    dataset.refresh_from_db()
    assert (dataset.status, dataset.status_message) == ("ready", CANCELLED)
    assert dataset.active_import_id != job.pk
    assert records(dataset, FULL_FIELDS) == before


def test_cancelling_a_running_import_stops_it_at_its_next_progress_report(analyst, monkeypatch):
    dataset = upload(analyst, RECORDS_CSV)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    report = DatasetJob.report

    def cancel_then_report(running, **kwargs):
        dataset_import_cancel(job=running, user=analyst)  # the user presses Cancel meanwhile
        return report(running, **kwargs)

    monkeypatch.setattr(DatasetJob, "report", cancel_then_report)

    dataset_import_execute(job_id=job.pk)

    job.refresh_from_db()
    dataset.refresh_from_db()
    assert job.status == "cancelled"
    assert (dataset.status, dataset.status_message) == ("failed", CANCELLED)
    assert not Record.objects.exists()


def test_cancelling_a_finished_import_is_refused(analyst):
    dataset = imported_dataset(analyst, RECORDS_CSV, TEXT_LABEL, report=False)

    with pytest.raises(ValidationError) as error:
        dataset_import_cancel(job=dataset.active_import, user=analyst)

    assert error.value.messages == ["This import has already finished."]
    dataset.active_import.refresh_from_db()
    assert dataset.active_import.status == "succeeded"


def test_second_import_while_one_is_queued_is_rejected_and_nothing_is_queued(analyst, monkeypatch):
    dataset = upload(analyst, RECORDS_CSV)
    first = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    published = []
    monkeypatch.setattr(DatasetJob, "enqueue", lambda job: published.append(job.pk))

    with pytest.raises(ValidationError) as error:
        dataset_import_start(
            dataset=dataset, user=analyst, mapping={"text_columns": ["topic"], "label_column": None}
        )

    assert error.value.messages == [ALREADY_RUNNING]
    assert published == []
    assert list(DatasetJob.objects.values_list("id", "status")) == [(first.pk, "queued")]
    dataset.refresh_from_db()
    assert dataset.status == "importing"
    assert dataset.mapping["text_columns"] == ["text"]


def test_import_of_a_lost_worker_restarts_from_the_first_row_without_duplicates(analyst):
    rows = [f"message number {n},label{n % 3}" for n in range(1, 31)]
    dataset = upload(analyst, "text,label\n" + "\n".join(rows) + "\n")
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    # A worker claimed it, wrote part of the file, then was killed (kill -9): no more heartbeats.
    assert job.claim()
    RecordFactory.create_batch(
        5, dataset=dataset, import_run=job, source_row=factory.Iterator(range(1, 6))
    )
    DatasetJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    assert jobs_sweep(stale_after_seconds=60) == {"requeued": 1}
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 1)
    assert job.message == "The worker was lost; restarting (attempt 2 of 2)."

    dataset_import_execute(job_id=job.pk)  # the next worker takes the republished message

    job.refresh_from_db()
    dataset.refresh_from_db()
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert (dataset.status, dataset.active_import_id, dataset.record_count) == ("ready", job.pk, 30)
    assert records(dataset, ("source_row", "text")) == [
        (n, f"message number {n}") for n in range(1, 31)
    ]


def test_import_of_a_file_with_a_ragged_row_fails_naming_its_line_and_keeps_nothing(analyst):
    dataset = upload(analyst, "text,label\nfine,a\nnot, fine,b\nfine too,a\n")

    job = import_now(dataset, analyst, TEXT_LABEL)

    message = (
        "Line 3 has 3 fields but the header has 2. "
        "A delimiter inside a value needs the value in double quotes."
    )
    assert job.status == "failed"
    assert job.problems == [{"line": 3, "column": None, "message": message}]
    assert job.error_message == (
        f"Nothing was imported: 1 problem found. First: {message} "
        "Fix the file or change the mapping, then retry."
    )
    dataset.refresh_from_db()
    assert (dataset.status, dataset.status_message) == ("failed", job.error_message)
    assert not Record.objects.exists()


def test_import_of_a_ragged_file_reports_every_bad_line(analyst):
    dataset = upload(analyst, "text,label\nfine,a\nnot, fine,b\nfine too,a\nalso,bad,c\n")

    job = import_now(dataset, analyst, TEXT_LABEL)

    assert job.status == "failed"
    assert job.problems == [
        {
            "line": line,
            "column": None,
            "message": f"Line {line} has 3 fields but the header has 2. "
            "A delimiter inside a value needs the value in double quotes.",
        }
        for line in (3, 5)
    ]
    assert job.error_message == (
        "Nothing was imported: 2 problems found. First: Line 3 has 3 fields but the header has "
        "2. A delimiter inside a value needs the value in double quotes. Fix the file or change "
        "the mapping, then retry."
    )
    dataset.refresh_from_db()
    assert (dataset.status, dataset.status_message) == ("failed", job.error_message)
    assert not Record.objects.exists()


def test_import_cuts_texts_at_the_length_limit_and_flags_them(analyst, settings):
    settings.DATASET_MAX_TEXT_CHARS = 10

    # Without the quality report, which adds its own tokens (test_report_flags.py).
    dataset = imported_dataset(
        analyst,
        "text,label\nshort,a\nexactly 10,a\na much longer text,b\n,b\n",
        TEXT_LABEL,
        report=False,
    )

    assert records(dataset, ("text", "flags")) == [
        ("short", ""),
        ("exactly 10", ""),
        ("a much lon", ",truncated,"),
        ("", ",empty,"),
    ]


def test_import_of_several_chunks_outside_a_transaction_writes_every_row_once(
    transactional_db, make_user
):
    # Outside a transaction PostgreSQL writes with COPY on a second thread, as in the worker.
    analyst = make_user("analyst")
    rows = 120_001
    csv_text = "text,label\n" + "".join(f"row {n},l{n % 7}\n" for n in range(1, rows + 1))

    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)

    stored = Record.objects.filter(dataset=dataset)
    assert dataset.record_count == rows
    assert stored.count() == rows
    assert stored.values("source_row").distinct().count() == rows
    assert stored.aggregate(low=Min("source_row"), high=Max("source_row")) == {
        "low": 1,
        "high": rows,
    }
    assert stored.get(source_row=100_000).text == "row 100000"
    # Ids follow the file, although two writers COPY chunks side by side.
    in_id_order = list(stored.order_by("id").values_list("source_row", flat=True))
    assert in_id_order == list(range(1, rows + 1))


def test_an_import_whose_worker_is_lost_twice_fails_and_the_dataset_can_be_retried(analyst):
    dataset = upload(analyst, RECORDS_CSV)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    for _ in range(2):
        assert job.claim()
        RecordFactory(dataset=dataset, import_run=job, source_row=1)
        DatasetJob.objects.filter(pk=job.pk).update(
            heartbeat_at=timezone.now() - timedelta(hours=1)
        )
        jobs_sweep(stale_after_seconds=60)
        job.refresh_from_db()

    assert (job.status, job.attempts) == ("failed", 2)
    assert job.error_message == (
        "The worker running this import stopped responding 2 times, so it was not restarted "
        "again. Nothing was imported; start the import again to retry."
    )
    dataset.refresh_from_db()
    assert dataset.status == "failed"
    assert dataset.status_message
    assert not Record.objects.exists()


def test_reading_the_file_again_while_an_import_is_queued_is_refused(analyst):
    dataset = upload(analyst, RECORDS_CSV)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    dataset.refresh_from_db()
    detection = dataset.detection

    with pytest.raises(ValidationError):
        dataset_detect(dataset=dataset, delimiter=";")

    dataset.refresh_from_db()
    assert (dataset.status, dataset.detection) == ("importing", detection)
    dataset_import_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded"


# --- quality report -----------------------------------------------------------------------------
CLEANING_CSV = (
    "text,label\n"
    "Where is my card?,card\n"  # 1
    "Where is my card?,card\n"  # 2: exact duplicate of 1
    "where is my card,card\n"  # 3: near-duplicate of 1
    ",card\n"  # 4: empty
    "I lost my PIN,pin\n"  # 5: conflict group (pin, pin, card)
    "i lost my pin.,pin\n"  # 6: near-duplicate of 5, in the conflict group
    "I lost my PIN,card\n"  # 7: conflict group, minority label
    "CafÃ© opening hours?,hours\n"  # 8: mojibake
    "<b>Card</b> broken &amp; stuck,card\n"  # 9: markup
    "How do I top up?,top_up\n"  # 10
)
BASE_LABELS = {"card": 6, "pin": 2, "hours": 1, "top_up": 1}


@pytest.fixture
def messy(analyst) -> Dataset:
    return imported_dataset(analyst, CLEANING_CSV, TEXT_LABEL)


def test_quality_report_stores_findings_with_examples_but_without_id_lists(messy):
    report = messy.quality_report

    assert {f["kind"]: f["count"] for f in report["findings"]} == {
        "empty": 1,
        "exact_duplicate": 1,
        "near_duplicate": 2,
        "label_conflict": 3,
        "small_class": 10,
        "mojibake": 1,
        "markup": 1,
    }
    for finding in report["findings"]:
        assert set(finding) == {"kind", "title", "count", "examples", "fix"}
    duplicate = next(f for f in report["findings"] if f["kind"] == "exact_duplicate")
    assert duplicate["examples"] == [
        {
            "id": record_id(messy, 2),
            "text": "Where is my card?",
            "label": "card",
            "detail": f"Same text and label as record {record_id(messy, 1)}.",
        }
    ]
    assert report["stats"]["total"] == 10
    assert report["stats"]["label_counts"] == BASE_LABELS
    job = messy.jobs.get(kind=DatasetJob.Kind.REPORT)
    assert (job.status, job.message) == ("succeeded", "Checked 10 records; 19 findings.")


def test_quality_report_is_queued_after_every_successful_import(analyst):
    dataset = imported_dataset(analyst, RECORDS_CSV, TEXT_LABEL, report=False)

    report_job = dataset.jobs.get(kind=DatasetJob.Kind.REPORT)
    assert report_job.status == "queued"
    dataset_report_execute(job_id=report_job.pk)

    dataset.refresh_from_db()
    assert dataset.quality_report["stats"]["total"] == 3


# --- cleaning -------------------------------------------------------------------------------------
def excluded(reason: str) -> dict:
    return {"is_excluded": True, "exclusion_reason": reason}


# fix -> ({source_row: changed fields}, label counts after). Reasons name record ids as {rN}.
FIX_CASES = {
    "drop_exact_duplicates": (
        {2: excluded("Copy of record {r1} (same text and label).")},
        {"card": 5, "pin": 2, "hours": 1, "top_up": 1},
    ),
    "drop_near_duplicates": (
        {
            3: excluded(
                "Near-duplicate of record {r1} (differs only in case, spacing or punctuation)."
            ),
            6: excluded(
                "Near-duplicate of record {r5} (differs only in case, spacing or punctuation)."
            ),
        },
        {"card": 5, "pin": 1, "hours": 1, "top_up": 1},
    ),
    "drop_empty": (
        {4: excluded("The text is empty.")},
        {"card": 5, "pin": 2, "hours": 1, "top_up": 1},
    ),
    "resolve_conflicts_majority": (
        {7: {"label": "pin", "original_label": "card"}},
        {"card": 5, "pin": 3, "hours": 1, "top_up": 1},
    ),
    "resolve_conflicts_drop": (
        {row: excluded("The same text appears with different labels.") for row in (5, 6, 7)},
        {"card": 5, "hours": 1, "top_up": 1},
    ),
    "repair_mojibake": (
        {8: {"text": "Café opening hours?", "original_text": "CafÃ© opening hours?"}},
        BASE_LABELS,
    ),
    "strip_markup": (
        {
            9: {
                "text": "Card broken & stuck",
                "original_text": "<b>Card</b> broken &amp; stuck",
            }
        },
        BASE_LABELS,
    ),
}


def expected_after(before: list[tuple], changes: dict, ids: dict) -> list[tuple]:
    rows = []
    for row in before:
        values = dict(zip(CLEANING_FIELDS, row, strict=True))
        for field, value in changes.get(values["source_row"], {}).items():
            values[field] = value.format(**ids) if isinstance(value, str) else value
        rows.append(tuple(values[field] for field in CLEANING_FIELDS))
    return rows


@pytest.mark.parametrize("kind", list(FIX_CASES))
def test_each_fix_changes_exactly_its_records_and_keeps_every_row(messy, analyst, kind):
    changes, label_counts = FIX_CASES[kind]
    ids = {f"r{row}": record_id(messy, row) for row in range(1, 11)}
    before = records(messy)
    assert [row[2:] for row in before] == [(None, row[3], None, False, "") for row in before]

    action = dataset_clean_apply(dataset=messy, user=analyst, kind=kind)

    assert records(messy) == expected_after(before, changes, ids)
    assert Record.objects.filter(dataset=messy).count() == 10
    messy.refresh_from_db()
    assert messy.label_counts == label_counts
    assert messy.record_count == sum(label_counts.values())
    assert (action.kind, action.affected_count, action.undone_at) == (kind, len(changes), None)
    assert sorted(
        CleaningChange.objects.filter(action=action).values_list("record_id", flat=True)
    ) == sorted(ids[f"r{row}"] for row in changes)


def test_a_fix_with_nothing_left_to_fix_is_refused_and_changes_nothing(messy, analyst):
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_empty")
    before = records(messy, FULL_FIELDS)

    with pytest.raises(ValidationError) as error:
        dataset_clean_apply(dataset=messy, user=analyst, kind="drop_empty")

    assert error.value.messages == ["Nothing to fix: no record matches this finding any more."]
    assert records(messy, FULL_FIELDS) == before
    assert CleaningAction.objects.count() == 1


def test_an_unknown_fix_is_refused_with_the_list_of_fixes(messy, analyst):
    with pytest.raises(ValidationError) as error:
        dataset_clean_apply(dataset=messy, user=analyst, kind="delete_everything")

    assert error.value.message_dict == {
        "kind": [
            "Unknown fix 'delete_everything'. Choose one of: drop_exact_duplicates, "
            "drop_near_duplicates, drop_empty, resolve_conflicts_majority, "
            "resolve_conflicts_drop, repair_mojibake, strip_markup, exclude_length_outliers, "
            "exclude_small_classes, exclude_mostly_noise."
        ]
    }
    assert not CleaningAction.objects.exists()


@pytest.mark.parametrize("kind", list(FIX_CASES))
def test_undo_restores_exactly_the_state_before_the_fix(messy, analyst, kind):
    before = records(messy, FULL_FIELDS)
    counts_before = (messy.record_count, messy.label_counts, messy.split_counts)
    action = dataset_clean_apply(dataset=messy, user=analyst, kind=kind)

    undone = dataset_clean_undo(dataset=messy, user=analyst)

    assert undone.pk == action.pk
    assert undone.undone_at is not None
    assert records(messy, FULL_FIELDS) == before
    messy.refresh_from_db()
    assert (messy.record_count, messy.label_counts, messy.split_counts) == counts_before


def test_undo_goes_back_one_fix_at_a_time_then_says_there_is_nothing_to_undo(messy, analyst):
    state_0 = records(messy, FULL_FIELDS)
    dataset_clean_apply(dataset=messy, user=analyst, kind="strip_markup")
    state_1 = records(messy, FULL_FIELDS)
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_near_duplicates")
    dataset_clean_apply(dataset=messy, user=analyst, kind="resolve_conflicts_majority")
    state_3 = records(messy, FULL_FIELDS)
    dataset_clean_apply(dataset=messy, user=analyst, kind="repair_mojibake")

    dataset_clean_undo(dataset=messy, user=analyst)
    assert records(messy, FULL_FIELDS) == state_3
    dataset_clean_undo(dataset=messy, user=analyst)
    dataset_clean_undo(dataset=messy, user=analyst)
    assert records(messy, FULL_FIELDS) == state_1
    dataset_clean_undo(dataset=messy, user=analyst)
    assert records(messy, FULL_FIELDS) == state_0

    with pytest.raises(ValidationError) as error:
        dataset_clean_undo(dataset=messy, user=analyst)

    assert error.value.messages == [NOTHING_TO_UNDO]
    assert records(messy, FULL_FIELDS) == state_0
    assert CleaningAction.objects.filter(undone_at__isnull=True).count() == 0


def test_undo_with_nothing_to_undo_gives_the_exact_message(messy, analyst):
    with pytest.raises(ValidationError) as error:
        dataset_clean_undo(dataset=messy, user=analyst)

    assert error.value.messages == [NOTHING_TO_UNDO]


def test_after_a_reimport_there_is_no_cleaning_step_left_to_undo(messy, analyst):
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_exact_duplicates")
    import_now(messy, analyst, TEXT_LABEL)

    with pytest.raises(ValidationError) as error:
        dataset_clean_undo(dataset=messy, user=analyst)

    assert error.value.messages == [NOTHING_TO_UNDO]


# --- splits ---------------------------------------------------------------------------------------
def labelled_csv(per_label: int, labels=("alpha", "beta", "gamma")) -> str:
    lines = [
        f"{label} sample text number {n},{label}" for label in labels for n in range(per_label)
    ]
    return "text,label\n" + "\n".join(lines) + "\n"


def splits_by_id(dataset: Dataset) -> dict[int, str]:
    return dict(Record.objects.filter(dataset=dataset).values_list("id", "split"))


def test_random_split_is_stratified_by_label(analyst):
    dataset = imported_dataset(analyst, labelled_csv(20), TEXT_LABEL, report=False)

    dataset_split(dataset=dataset, user=analyst, ratios=(0.8, 0.1, 0.1), seed=7)

    for label in ("alpha", "beta", "gamma"):
        counts = dict(
            Record.objects.filter(dataset=dataset, label=label)
            .values_list("split")
            .annotate(n=Count("id"))
        )
        assert counts == {"train": 16, "validation": 2, "test": 2}, label
    dataset.refresh_from_db()
    assert dataset.split_counts == {"test": 6, "train": 48, "validation": 6}


def test_random_split_is_the_same_for_the_same_seed_and_differs_for_another(analyst):
    dataset = imported_dataset(analyst, labelled_csv(20), TEXT_LABEL, report=False)

    dataset_split(dataset=dataset, user=analyst, seed=7)
    first = splits_by_id(dataset)
    dataset_split(dataset=dataset, user=analyst, seed=8)
    other_seed = splits_by_id(dataset)
    dataset_split(dataset=dataset, user=analyst, seed=7)
    again = splits_by_id(dataset)

    assert again == first
    assert other_seed != first
    assert sorted(other_seed.values()) == sorted(first.values())


def test_random_split_keeps_near_duplicates_in_one_split(analyst):
    groups = [
        ["Where is my card?", "where is my card", "WHERE IS MY CARD!!"],
        ["I lost my PIN", "i lost my pin.", "I  lost my PIN"],
        ["Top up failed", "top up failed!", "Top-up failed"],
        ["Refund please", "refund, please", "REFUND PLEASE"],
    ]
    lines = [f'"{text}",card' for group in groups for text in group]
    lines += [f"unique card question {n},card" for n in range(20)]
    lines += [f"unique pin question {n},pin" for n in range(20)]
    dataset = imported_dataset(
        analyst, "text,label\n" + "\n".join(lines) + "\n", TEXT_LABEL, report=False
    )

    for seed in range(6):
        dataset_split(dataset=dataset, user=analyst, ratios=(0.5, 0.25, 0.25), seed=seed)
        for group in groups:
            splits = set(
                Record.objects.filter(dataset=dataset, text__in=group).values_list(
                    "split", flat=True
                )
            )
            assert len(splits) == 1, (seed, group, splits)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.5, 0.3, 0.1), RATIOS_MESSAGE),
        ((0.8, 0.2, 0.2), RATIOS_MESSAGE),
        ((1.2, -0.1, -0.1), RATIOS_MESSAGE),
        ((0.0, 0.5, 0.5), "The train ratio must be above 0."),
    ],
)
def test_random_split_rejects_ratios_that_do_not_add_up(analyst, ratios, message):
    dataset = imported_dataset(analyst, labelled_csv(5), TEXT_LABEL, report=False)

    with pytest.raises(ValidationError) as error:
        dataset_split(dataset=dataset, user=analyst, ratios=ratios)

    assert error.value.message_dict == {"ratios": [message]}
    assert set(splits_by_id(dataset).values()) == {""}
    dataset.refresh_from_db()
    assert dataset.split_counts == {"": 15}


def test_file_split_needs_a_mapped_split_column(analyst):
    dataset = imported_dataset(analyst, labelled_csv(5), TEXT_LABEL, report=False)

    with pytest.raises(ValidationError) as error:
        dataset_split(dataset=dataset, user=analyst, mode="file")

    assert error.value.message_dict == {"mode": [NO_SPLIT_COLUMN]}
    assert set(splits_by_id(dataset).values()) == {""}


def test_file_split_keeps_the_splits_the_file_brought(analyst):
    dataset = imported_dataset(analyst, MAPPED_CSV, TEXT_LABEL_SPLIT, report=False)

    result = dataset_split(dataset=dataset, user=analyst, mode="file")

    assert records(dataset, ("source_row", "split")) == [
        (1, "train"),
        (2, "validation"),
        (3, "validation"),
        (4, "test"),
        (5, "validation"),
    ]
    assert result.split_counts == {"test": 1, "train": 1, "validation": 3}


def test_file_split_after_a_random_split_goes_back_to_the_files_splits(analyst):
    dataset = imported_dataset(analyst, MAPPED_CSV, TEXT_LABEL_SPLIT, report=False)
    from_file = records(dataset, ("source_row", "split"))
    dataset_split(dataset=dataset, user=analyst, ratios=(0.2, 0.4, 0.4), seed=3)
    assert records(dataset, ("source_row", "split")) != from_file

    dataset_split(dataset=dataset, user=analyst, mode="file")

    assert records(dataset, ("source_row", "split")) == from_file


def test_file_split_refuses_records_without_a_split(analyst):
    csv_text = "text,label,split\none,a,train\ntwo,b,\nthree,a,\nfour,b,test\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL_SPLIT, report=False)

    with pytest.raises(ValidationError) as error:
        dataset_split(dataset=dataset, user=analyst, mode="file")

    assert error.value.message_dict == {
        "mode": ["2 records have no split in the file. Fill them in, or split at random."]
    }


def test_file_split_names_a_single_record_without_a_split_in_the_singular(analyst):
    csv_text = "text,label,split\none,a,train\ntwo,b,\nthree,a,test\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL_SPLIT, report=False)

    with pytest.raises(ValidationError) as error:
        dataset_split(dataset=dataset, user=analyst, mode="file")

    assert error.value.message_dict == {
        "mode": ["1 record has no split in the file. Fill it in, or split at random."]
    }


# --- snapshots --------------------------------------------------------------------------------------
def snapshot_rows(snapshot: Snapshot) -> list[tuple]:
    return list(
        SnapshotRecord.objects.filter(snapshot=snapshot)
        .order_by("id")
        .values_list(*SNAPSHOT_FIELDS)
    )


def test_snapshots_are_numbered_one_two_three(messy, analyst):
    numbers = [snapshot_create(dataset=messy, user=analyst).number for _ in range(3)]

    assert numbers == [1, 2, 3]
    assert list(Snapshot.objects.filter(dataset=messy).values_list("number", flat=True)) == [
        3,
        2,
        1,
    ]


def test_snapshot_freezes_text_label_and_split_of_every_current_record(messy, analyst):
    dataset_split(dataset=messy, user=analyst, seed=1)

    snapshot = snapshot_create(dataset=messy, user=analyst, note="first cut")

    current = records(messy, ("id", "source_row", "text", "label", "split"))
    assert snapshot_rows(snapshot) == current
    messy.refresh_from_db()
    assert (snapshot.note, snapshot.record_count) == ("first cut", 10)
    assert snapshot.label_counts == BASE_LABELS
    assert snapshot.split_counts == messy.split_counts


def test_snapshot_does_not_change_when_the_dataset_is_cleaned_relabelled_or_resplit(messy, analyst):
    dataset_split(dataset=messy, user=analyst, seed=1)
    snapshot = snapshot_create(dataset=messy, user=analyst)
    frozen_rows = snapshot_rows(snapshot)
    frozen_counts = (snapshot.record_count, snapshot.label_counts, snapshot.split_counts)

    for kind in ("strip_markup", "repair_mojibake", "resolve_conflicts_majority", "drop_empty"):
        dataset_clean_apply(dataset=messy, user=analyst, kind=kind)
    dataset_split(dataset=messy, user=analyst, ratios=(0.5, 0.25, 0.25), seed=99)
    dataset_clean_undo(dataset=messy, user=analyst)

    assert records(messy, ("text", "label", "split")) != [row[2:] for row in frozen_rows]
    assert snapshot_rows(snapshot) == frozen_rows
    snapshot.refresh_from_db()
    assert (snapshot.record_count, snapshot.label_counts, snapshot.split_counts) == frozen_counts


def test_snapshot_leaves_out_excluded_records(messy, analyst):
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_near_duplicates")

    snapshot = snapshot_create(dataset=messy, user=analyst)

    assert [row[1] for row in snapshot_rows(snapshot)] == [1, 2, 4, 5, 7, 8, 9, 10]
    assert (snapshot.record_count, snapshot.label_counts) == (
        8,
        {"card": 5, "pin": 1, "hours": 1, "top_up": 1},
    )


def test_snapshot_of_a_fully_excluded_dataset_is_refused(analyst):
    dataset = imported_dataset(analyst, "text,label\n,card\n   ,card\n", TEXT_LABEL, report=False)
    dataset_clean_apply(dataset=dataset, user=analyst, kind="drop_empty")

    with pytest.raises(ValidationError) as error:
        snapshot_create(dataset=dataset, user=analyst)

    assert error.value.messages == [
        "Every record is excluded; a snapshot needs at least one record."
    ]
    assert not Snapshot.objects.exists()
    assert not SnapshotRecord.objects.exists()


def test_snapshot_of_a_dataset_without_records_is_refused(analyst):
    dataset = upload(analyst, RECORDS_CSV)

    with pytest.raises(ValidationError) as error:
        snapshot_create(dataset=dataset, user=analyst)

    assert error.value.messages == ["This dataset has no imported records to snapshot yet."]
    assert not Snapshot.objects.exists()


# --- export ---------------------------------------------------------------------------------------
FORMULA_CSV = (
    "text,label\n"
    '"=HYPERLINK(""http://evil.example"",""x"")",formula\n'
    "+44 call me,phone\n"
    "-5 degrees outside,weather\n"
    "@support please help,-negative\n"
    "plain text,plain\n"
)
FORMULA_TEXTS = [
    '=HYPERLINK("http://evil.example","x")',
    "+44 call me",
    "-5 degrees outside",
    "@support please help",
    "plain text",
]


def test_csv_export_escapes_cells_a_spreadsheet_would_run_as_formulas(analyst):
    dataset = imported_dataset(analyst, FORMULA_CSV, TEXT_LABEL, report=False)

    exported = "".join(export_stream(dataset=dataset, fmt="csv"))

    assert exported == (
        "source_row,text,label,split\r\n"
        '1,"\'=HYPERLINK(""http://evil.example"",""x"")",formula,\r\n'
        "2,'+44 call me,phone,\r\n"
        "3,'-5 degrees outside,weather,\r\n"
        "4,'@support please help,'-negative,\r\n"
        "5,plain text,plain,\r\n"
    )


def test_jsonl_export_keeps_texts_exactly(analyst):
    dataset = imported_dataset(analyst, FORMULA_CSV, TEXT_LABEL, report=False)

    lines = "".join(export_stream(dataset=dataset, fmt="jsonl")).splitlines()

    assert [json.loads(line) for line in lines] == [
        {"source_row": n, "text": text, "label": label, "split": ""}
        for n, text, label in zip(
            range(1, 6),
            FORMULA_TEXTS,
            ["formula", "phone", "weather", "-negative", "plain"],
            strict=True,
        )
    ]


def test_export_of_a_snapshot_keeps_its_version_while_current_export_follows_cleaning(
    messy, analyst
):
    snapshot = snapshot_create(dataset=messy, user=analyst)
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_exact_duplicates")
    dataset_clean_apply(dataset=messy, user=analyst, kind="resolve_conflicts_majority")

    def exported(**kwargs) -> list[tuple]:
        text = "".join(export_stream(fmt="csv", **kwargs))
        return [(row["source_row"], row["label"]) for row in csv.DictReader(io.StringIO(text))]

    assert exported(snapshot=snapshot) == [
        (str(n), label)
        for n, label in enumerate(
            ["card", "card", "card", "card", "pin", "pin", "card", "hours", "card", "top_up"],
            start=1,
        )
    ]
    assert exported(dataset=messy) == [
        (str(n), label)
        for n, label in [
            (1, "card"),
            (3, "card"),
            (4, "card"),
            (5, "pin"),
            (6, "pin"),
            (7, "pin"),
            (8, "hours"),
            (9, "card"),
            (10, "top_up"),
        ]
    ]


# --- demo ---------------------------------------------------------------------------------------
def test_demo_dataset_loads_banking77_with_its_licence_and_attribution(analyst):
    dataset = demo_dataset_load(user=analyst)

    assert dataset.licence == "CC BY 4.0"
    assert "BANKING77" in dataset.attribution
    assert "PolyAI" in dataset.attribution
    job = dataset.jobs.get(kind=DatasetJob.Kind.IMPORT)
    dataset.refresh_from_db()
    assert (dataset.status, job.status) == ("importing", "queued")

    dataset_import_execute(job_id=job.pk)
    run_queued_reports(dataset)

    dataset.refresh_from_db()
    assert (dataset.status, dataset.record_count, len(dataset.label_counts)) == ("ready", 1540, 77)
    assert dataset.quality_report["stats"]["total"] == 1540


def test_loading_the_demo_twice_returns_the_same_dataset(analyst):
    first = demo_dataset_load(user=analyst)

    again = demo_dataset_load(user=analyst)

    assert again.pk == first.pk
    assert Dataset.objects.count() == 1
    assert DatasetJob.objects.count() == 1


# --- keyset paging ----------------------------------------------------------------------------------
def paging_csv() -> str:
    lines = []
    for n in range(23):
        split = ("train", "validation", "test")[n % 3]
        if n in (5, 11):
            lines.append(f",card,{split}")
        elif n % 4 == 0:
            lines.append(f"message {n} about a refund,refund,{split}")
        elif n == 7:
            lines.append(f"<b>message {n}</b> about my cards,card,{split}")
        else:
            lines.append(f"message {n} about my cards,card,{split}")
    return "text,label,split\n" + "\n".join(lines) + "\n"


@pytest.fixture
def paged(analyst) -> Dataset:
    dataset = imported_dataset(analyst, paging_csv(), TEXT_LABEL_SPLIT, report=False)
    dataset_clean_apply(dataset=dataset, user=analyst, kind="drop_empty")
    dataset_clean_apply(dataset=dataset, user=analyst, kind="strip_markup")
    return dataset


def all_pages(dataset: Dataset, page_size: int, **filters) -> list[list[int]]:
    pages, after = [], None
    while True:
        page = record_page(dataset=dataset, after=after, page_size=page_size, **filters)
        pages.append([r.id for r in page.records])
        assert page.has_previous == (after is not None)
        if page.next_after is None:
            return pages
        assert page.next_after == page.records[-1].id
        after = page.next_after


PAGING_FILTERS = {
    "none": ({}, lambda r: True),
    "label": ({"label": "refund"}, lambda r: r.label == "refund"),
    "split": ({"split": "test"}, lambda r: r.split == "test"),
    "label and split": (
        {"label": "card", "split": "train"},
        lambda r: r.label == "card" and r.split == "train",
    ),
    "flag empty": ({"flag": "empty"}, lambda r: r.source_row in (6, 12)),
    "flag excluded": ({"flag": "excluded"}, lambda r: r.is_excluded),
    "flag edited": ({"flag": "edited"}, lambda r: r.source_row == 8),
    "search": ({"search": "refund"}, lambda r: "refund" in r.text),
}


@pytest.mark.parametrize("name", list(PAGING_FILTERS))
@pytest.mark.parametrize("page_size", [1, 4, 23, 50])
def test_record_page_returns_every_matching_record_exactly_once(paged, name, page_size):
    filters, matches = PAGING_FILTERS[name]
    expected = [r.id for r in Record.objects.filter(dataset=paged).order_by("id") if matches(r)]
    assert expected

    pages = all_pages(paged, page_size, **filters)

    assert [record_id for page in pages for record_id in page] == expected
    assert all(len(page) == page_size for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= page_size


def test_record_page_search_is_substring_until_the_index_job_runs_then_full_text(analyst):
    csv_text = "text,label\nRefund my money,a\nmoney refund now,a\nmoneyrefunds,a\nhello,b\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)

    before = record_page(dataset=dataset, search="money refund")

    # Until the index is built: the text as typed, anywhere, any case.
    assert [r.text for r in before.records] == ["money refund now"]
    assert before.search_mode == "substring"
    run_queued_search_index(dataset)
    after = record_page(dataset=dataset, search="money refund")
    # Words, in any order (websearch syntax); no substrings of other words. The same on
    # SQLite (FTS5) as on PostgreSQL.
    assert [r.text for r in after.records] == ["Refund my money", "money refund now"]
    assert after.search_mode == "full_text"
    assert dataset.search_import_id == dataset.active_import_id
    job = dataset.jobs.get(kind=DatasetJob.Kind.SEARCH_INDEX)
    assert (job.status, job.message) == ("succeeded", "Full-text search is ready.")


postgresql_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="these check PostgreSQL's side table (SQLite: tests/datasets_app/test_word_search.py)",
)


def _found(dataset: Dataset, search: str) -> list[int]:
    dataset.refresh_from_db()
    return [r.source_row for r in record_page(dataset=dataset, search=search).records]


@postgresql_only
def test_search_index_follows_texts_edited_by_a_fix_and_by_its_undo(analyst):
    csv_text = "text,label\nun cafÃ© noir,a\nthe café downstairs,a\nnothing here,b\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL, report=False)
    run_queued_search_index(dataset)
    assert _found(dataset, "café") == [2]

    dataset_clean_apply(dataset=dataset, user=analyst, kind="repair_mojibake")
    assert _found(dataset, "café") == [1, 2]
    assert _found(dataset, "cafÃ©") == []

    dataset_clean_undo(dataset=dataset, user=analyst)
    assert _found(dataset, "café") == [2]
    assert _found(dataset, "cafÃ©") == [1]


@postgresql_only
def test_search_entries_go_with_the_records_they_index(analyst):
    dataset = imported_dataset(analyst, "text,label\nfirst words,a\nsecond,b\n", TEXT_LABEL)
    run_queued_search_index(dataset)
    first_run = dataset.active_import_id
    assert RecordSearch.objects.filter(import_run_id=first_run).count() == 2

    # A reimport replaces the records, and their index entries with them.
    import_now(dataset, analyst, TEXT_LABEL)
    dataset.refresh_from_db()
    assert RecordSearch.objects.filter(import_run_id=first_run).count() == 0
    assert dataset.search_import_id == first_run != dataset.active_import_id
    assert _found(dataset, "words") == [1]  # substring until the new index is built
    run_queued_search_index(dataset)
    assert RecordSearch.objects.filter(import_run_id=dataset.active_import_id).count() == 2

    dataset_delete(dataset=dataset, user=analyst)
    assert not RecordSearch.objects.exists()


@postgresql_only
def test_index_job_of_records_replaced_before_it_ran_indexes_nothing(analyst):
    dataset = imported_dataset(analyst, "text,label\nold words,a\nb,b\n", TEXT_LABEL)
    stale = dataset.jobs.get(kind=DatasetJob.Kind.SEARCH_INDEX)
    import_now(dataset, analyst, TEXT_LABEL)  # queues a second index job
    stale.refresh_from_db()
    assert stale.status == "queued"

    dataset_job_execute(job_id=stale.pk)
    stale.refresh_from_db()
    assert stale.status == "succeeded"
    # It indexes whatever is current when it runs: the new records, never stale ones.
    dataset.refresh_from_db()
    assert dataset.search_import_id == dataset.active_import_id
    assert set(RecordSearch.objects.values_list("import_run_id", flat=True)) == {
        dataset.active_import_id
    }


@postgresql_only
@pytest.mark.parametrize("checks_once", [True, False], ids=["checked once", "checked per row"])
def test_records_of_a_deleted_import_are_refused_whichever_way_keys_are_checked(
    analyst, checks_once
):
    from psycopg2.errors import ForeignKeyViolation

    from datasets_app.csv_io import ImportProblem
    from datasets_app.services.imports import RecordWriter

    dataset = imported_dataset(analyst, "text,label\na,b\n", TEXT_LABEL, report=False)
    frame = pd.DataFrame(
        {
            "source_row": [1],
            "text": ["x"],
            "label": [""],
            "split": [""],
            "external_id": [""],
            "metadata": ["{}"],
            "flags": [""],
        }
    )
    writer = RecordWriter(dataset_id=dataset.pk, import_run_id=10**15)  # no such import
    assert writer.checks_once  # the test database role may skip per-row triggers
    writer.checks_once = checks_once
    with connection.cursor() as cursor:  # inside the test's transaction: check at COPY's end
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    error = ImportProblem if checks_once else ForeignKeyViolation
    with pytest.raises(error):  # written inline: the test holds a transaction
        writer.write(frame)
    assert not Record.objects.filter(import_run_id=10**15).exists()


@postgresql_only
def test_index_job_on_two_connections_indexes_every_record_once(
    transactional_db, make_user, settings, monkeypatch
):
    from datasets_app.services import search

    settings.DATASET_IMPORT_WRITERS = 2
    monkeypatch.setattr(search, "CHUNK_IDS", 7)  # many small ranges, finished out of order
    analyst = make_user("analyst")
    rows = "".join(f"message number {n},l{n % 3}\n" for n in range(1, 61))
    dataset = imported_dataset(analyst, "text,label\n" + rows, TEXT_LABEL, report=False)

    run_queued_search_index(dataset)

    job = dataset.jobs.get(kind=DatasetJob.Kind.SEARCH_INDEX)
    assert (job.status, job.progress) == ("succeeded", 100)
    entries = RecordSearch.objects.filter(import_run_id=dataset.active_import_id)
    assert entries.count() == 60
    assert _found(dataset, "number 42") == [42]
    assert record_page(dataset=dataset, search="message").search_mode == "full_text"


@postgresql_only
def test_cancelled_index_job_leaves_search_on_substrings(analyst, monkeypatch):
    from datasets_app.services import search

    monkeypatch.setattr(search, "CHUNK_IDS", 1)
    dataset = imported_dataset(analyst, "text,label\nred fox,a\nblue fox,b\n", TEXT_LABEL)
    job = dataset.jobs.get(kind=DatasetJob.Kind.SEARCH_INDEX)
    monkeypatch.setattr(DatasetJob, "report", lambda self, **kwargs: self.cancel() and False)

    dataset_job_execute(job_id=job.pk)

    job.refresh_from_db()
    dataset.refresh_from_db()
    assert job.status == "cancelled"
    assert dataset.search_import_id is None
    assert record_page(dataset=dataset, search="fox").search_mode == "substring"
    # The first range was written before the cancel was seen; nothing after it.
    assert RecordSearch.objects.filter(import_run_id=dataset.active_import_id).count() == 1


@postgresql_only
def test_index_job_whose_worker_died_midway_finishes_when_run_again(analyst, monkeypatch):
    from datasets_app.services import search

    monkeypatch.setattr(search, "CHUNK_IDS", 1)
    csv_text = "text,label\nred fox,a\nblue fox,b\ngreen fox,a\n"
    dataset = imported_dataset(analyst, csv_text, TEXT_LABEL)
    job = dataset.jobs.get(kind=DatasetJob.Kind.SEARCH_INDEX)

    class WorkerDied(BaseException):
        """Nothing after it runs in that worker, as after kill -9."""

    def die(self, **kwargs):
        raise WorkerDied

    monkeypatch.setattr(DatasetJob, "report", die)  # right after the first range
    with pytest.raises(WorkerDied):
        dataset_job_execute(job_id=job.pk)
    monkeypatch.undo()
    monkeypatch.setattr(search, "CHUNK_IDS", 1)
    job.refresh_from_db()
    assert job.status == "running"
    assert RecordSearch.objects.filter(import_run_id=dataset.active_import_id).count() == 1

    assert job.requeue(message="The worker was lost.")  # what the sweeper does
    dataset_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "succeeded"
    assert RecordSearch.objects.filter(import_run_id=dataset.active_import_id).count() == 3
    assert _found(dataset, "fox") == [1, 2, 3]
    assert record_page(dataset=dataset, search="fox").search_mode == "full_text"


@pytest.mark.usefixtures("redis_url")
def test_a_gzip_upload_inflating_past_the_limit_fails_its_import_and_keeps_nothing(
    analyst, settings
):
    import gzip

    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets_app.models import Record
    from tests.datasets_app.factories import import_now

    settings.DATASET_MAX_UNCOMPRESSED_BYTES = 1024**2
    data = gzip.compress(("text,label\n" + "same row again,a\n" * 200_000).encode(), mtime=0)
    from datasets_app.services import dataset_upload

    dataset = dataset_upload(
        user=analyst, file=SimpleUploadedFile("bomb.csv.gz", data), name="bomb"
    )

    job = import_now(dataset, analyst, {"text_columns": ["text"], "label_column": "label"})

    assert job.status == "failed"
    assert [p["message"] for p in job.problems] == [
        "Decompressed, the file is larger than 1 MB, the most an import reads from a compressed "
        "file. Split it into smaller files."
    ]
    assert not Record.objects.filter(dataset=dataset).exists()


@pytest.mark.usefixtures("redis_url")
def test_snapshot_records_cannot_be_changed_even_by_a_direct_update(analyst):
    from django.db import DatabaseError, transaction

    from datasets_app.models import SnapshotRecord
    from tests.datasets_app.factories import imported_dataset

    dataset = imported_dataset(
        analyst, "text,label\nhello,a\nbye,b\n", {"text_columns": ["text"], "label_column": "label"}
    )
    snapshot = snapshot_create(dataset=dataset, user=analyst)

    with pytest.raises(DatabaseError, match="Snapshot records are immutable"), transaction.atomic():
        SnapshotRecord.objects.filter(snapshot=snapshot).update(label="changed")
    with (
        pytest.raises(DatabaseError, match="Snapshot records are immutable"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE datasets_app_snapshotrecord SET text = 'x'")

    assert sorted(snapshot.records.values_list("text", "label")) == [("bye", "b"), ("hello", "a")]
    # Deleting the dataset still removes its snapshots and their records.
    from datasets_app.services import dataset_delete

    dataset_delete(dataset=dataset, user=analyst)
    assert not SnapshotRecord.objects.exists()


@pytest.mark.usefixtures("redis_url")
def test_a_split_whose_worker_is_lost_twice_fails_saying_nothing_changed(analyst):
    from datasets_app.services.snapshots import dataset_split_start
    from tests.datasets_app.factories import imported_dataset

    dataset = imported_dataset(analyst, RECORDS_CSV, TEXT_LABEL, report=False)
    job = dataset_split_start(dataset=dataset, user=analyst)
    for _ in range(2):
        assert job.claim()
        DatasetJob.objects.filter(pk=job.pk).update(
            heartbeat_at=timezone.now() - timedelta(hours=1)
        )
        jobs_sweep(stale_after_seconds=60)
        job.refresh_from_db()

    assert (job.status, job.attempts) == ("failed", 2)
    assert job.error_message == (
        "The worker running this split stopped responding 2 times, so it was not restarted "
        "again. Nothing was changed; start it again to retry."
    )
    assert not Record.objects.filter(import_run_id=dataset.active_import_id).exclude(split="")


@pytest.mark.usefixtures("redis_url")
def test_fixes_of_replaced_records_are_marked_replaced_not_undone(client, analyst):
    from datasets_app.models import CleaningAction
    from datasets_app.services import dataset_clean_apply, dataset_clean_undo
    from tests.datasets_app.factories import import_now, imported_dataset

    mapping = {"text_columns": ["text"], "label_column": "label"}
    dataset = imported_dataset(analyst, "text,label\nx,a\nx,a\ny,b\n", mapping)
    action = dataset_clean_apply(dataset=dataset, user=analyst, kind="drop_exact_duplicates")

    assert import_now(dataset, analyst, mapping).status == "succeeded"

    action = CleaningAction.objects.get(pk=action.pk)
    assert action.undone_at is None
    assert action.superseded_at is not None
    with pytest.raises(ValidationError, match=r"There is no cleaning step to undo\."):
        dataset_clean_undo(dataset=dataset, user=analyst)
    client.force_login(analyst)
    page = client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert "replaced by an import</span>" in page
    assert "Undo last cleaning step" not in page


@postgresql_only
def test_the_index_job_leaves_statistics_for_the_planner(analyst):
    """Without statistics of the word index, a page of results for a common word was planned
    as a scan of every match (1 s on a million records); the job gathers them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            pytest.skip("clearing planner statistics needs a superuser")
        cursor.execute(
            "DELETE FROM pg_statistic WHERE starelid = 'datasets_app_recordsearch'::regclass"
        )
    dataset = imported_dataset(analyst, "text,label\nthe refund,a\nthe card,b\n", TEXT_LABEL)

    run_queued_search_index(dataset)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_statistic s JOIN pg_attribute a "
            "ON a.attrelid = s.starelid AND a.attnum = s.staattnum "
            "WHERE s.starelid = 'datasets_app_recordsearch'::regclass AND a.attname = 'vector'"
        )
        assert cursor.fetchone()[0] == 1
