"""Splits and cleaning fixes as background jobs: what start refuses (with nothing queued), one
records-changing job per dataset at a time, progress and endings, and that a worker dying
midway shows nothing half-done and a rerun ends correct. Jobs are published to the Redis test
broker and run here, synchronously, by calling the service the task calls."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from datasets_app.models import CleaningAction, Dataset, DatasetJob, Record
from datasets_app.services import (
    dataset_clean_apply,
    dataset_clean_execute,
    dataset_clean_start,
    dataset_import_start,
    dataset_job_execute,
    dataset_split,
    dataset_split_execute,
    dataset_split_start,
)
from datasets_app.services import snapshots as split_service
from tests.conftest import skip_or_fail
from tests.datasets_app.factories import dataset_row_held, imported_dataset, run_queued_jobs

TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
RATIOS_MESSAGE = "Give three ratios (train, validation, test) that add up to 1."
SPLIT_BUSY = "Splits of this dataset are being assigned. Wait for that to finish, then try again."
CLEAN_BUSY = (
    "A cleaning fix is being applied to this dataset. Wait for it to finish, then try again."
)
IMPORT_BUSY = (
    "An import of this dataset is running. Wait for it to finish (or cancel it), then try again."
)
MESSY_CSV = (
    "text,label\n"
    "Where is my card?,card\n"
    "Where is my card?,card\n"
    "Where is my card?,card\n"
    ",card\n"
    "I lost my PIN,pin\n"
    "How do I top up?,top_up\n"
)


pytestmark = pytest.mark.usefixtures("redis_broker")


def labelled_csv(per_label: int) -> str:
    lines = [
        f"{label} text number {n},{label}" for label in ("a", "b", "c") for n in range(per_label)
    ]
    return "text,label\n" + "\n".join(lines) + "\n"


@pytest.fixture
def dataset(analyst) -> Dataset:
    return imported_dataset(analyst, labelled_csv(10), TEXT_LABEL, report=False)


@pytest.fixture
def messy(analyst) -> Dataset:
    return imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, report=False)


def splits(dataset: Dataset) -> dict[int, str]:
    return dict(Record.objects.filter(dataset=dataset).values_list("id", "split"))


def rows() -> list[tuple]:
    return list(
        Record.objects.order_by("id").values_list("id", "text", "label", "split", "is_excluded")
    )


def active_jobs() -> list[tuple]:
    return list(
        DatasetJob.objects.filter(kind__in=["split", "clean"]).values_list("kind", "status")
    )


class WorkerDied(BaseException):
    """Stands for the worker process being killed: nothing below catches it."""


# --- start: every parameter checked at once, nothing queued when refused -------------------------------
@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"ratios": (0.5, 0.3, 0.1)}, {"ratios": [RATIOS_MESSAGE]}),
        ({"ratios": (1.2, -0.1, -0.1)}, {"ratios": [RATIOS_MESSAGE]}),
        ({"ratios": (math.nan, 0.5, 0.5)}, {"ratios": [RATIOS_MESSAGE]}),
        ({"ratios": (0.5, 0.5)}, {"ratios": [RATIOS_MESSAGE]}),
        ({"ratios": (0.0, 0.5, 0.5)}, {"ratios": ["The train ratio must be above 0."]}),
        (
            {"mode": "file"},
            {"mode": ["The file had no split column mapped. Choose a random split."]},
        ),
        ({"mode": "alphabetical"}, {"mode": ["Mode must be 'random' or 'file'."]}),
    ],
)
def test_split_start_refuses_bad_parameters_with_nothing_queued(analyst, dataset, params, errors):
    before = rows()

    with pytest.raises(ValidationError) as error:
        dataset_split_start(dataset=dataset, user=analyst, **params)

    assert error.value.message_dict == errors
    assert active_jobs() == []
    assert rows() == before


def test_split_start_refuses_when_every_record_is_excluded(analyst, dataset):
    Record.objects.filter(dataset=dataset).update(is_excluded=True)

    with pytest.raises(ValidationError) as error:
        dataset_split_start(dataset=dataset, user=analyst)

    assert error.value.messages == ["All records are excluded; there is nothing to split."]
    assert active_jobs() == []


def test_split_and_clean_start_refuse_a_dataset_without_records(analyst):
    from tests.datasets_app.factories import upload

    uploaded = upload(analyst, labelled_csv(2))

    with pytest.raises(ValidationError) as split_error:
        dataset_split_start(dataset=uploaded, user=analyst)
    with pytest.raises(ValidationError) as clean_error:
        dataset_clean_start(dataset=uploaded, user=analyst, kind="drop_empty")

    assert split_error.value.messages == ["This dataset has no imported records to split yet."]
    assert clean_error.value.messages == ["This dataset has no imported records to clean yet."]
    assert active_jobs() == []


def test_clean_start_refuses_an_unknown_fix_with_nothing_queued(analyst, messy):
    with pytest.raises(ValidationError) as error:
        dataset_clean_start(dataset=messy, user=analyst, kind="delete_everything")

    assert list(error.value.message_dict) == ["kind"]
    assert error.value.message_dict["kind"][0].startswith("Unknown fix 'delete_everything'.")
    assert active_jobs() == []


def test_a_viewer_cannot_start_a_split_or_a_fix(dataset):
    from django.core.exceptions import PermissionDenied

    from tests.factories import UserFactory

    viewer = UserFactory(role="viewer")
    with pytest.raises(PermissionDenied):
        dataset_split_start(dataset=dataset, user=viewer)
    with pytest.raises(PermissionDenied):
        dataset_clean_start(dataset=dataset, user=viewer, kind="drop_empty")
    assert active_jobs() == []


# --- one records-changing job at a time ------------------------------------------------------------
def test_while_a_split_is_queued_splits_fixes_and_imports_are_refused(analyst, dataset):
    dataset_split_start(dataset=dataset, user=analyst, seed=1)

    for start, message in [
        (lambda: dataset_split_start(dataset=dataset, user=analyst, seed=2), SPLIT_BUSY),
        (lambda: dataset_clean_start(dataset=dataset, user=analyst, kind="drop_empty"), SPLIT_BUSY),
        (lambda: dataset_import_start(dataset=dataset, user=analyst), SPLIT_BUSY),
    ]:
        with pytest.raises(ValidationError) as error:
            start()
        assert error.value.messages == [message]
    assert active_jobs() == [("split", "queued")]
    assert dataset.jobs.filter(kind="import").count() == 1  # the first import only


def test_while_a_fix_runs_a_split_is_refused_and_after_it_ends_it_is_not(analyst, messy):
    job = dataset_clean_start(dataset=messy, user=analyst, kind="drop_exact_duplicates")
    job.claim()

    with pytest.raises(ValidationError) as error:
        dataset_split_start(dataset=messy, user=analyst)
    assert error.value.messages == [CLEAN_BUSY]

    DatasetJob.objects.filter(pk=job.pk).update(status="queued")
    run_queued_jobs(messy)
    assert dataset_split_start(dataset=messy, user=analyst).status == "queued"


def test_while_an_import_is_queued_a_split_is_refused(analyst, dataset):
    dataset_import_start(dataset=dataset, user=analyst)

    with pytest.raises(ValidationError) as error:
        dataset_split_start(dataset=dataset, user=analyst)

    assert error.value.messages == [IMPORT_BUSY]
    assert active_jobs() == []


# --- progress and endings ---------------------------------------------------------------------------
@contextmanager
def recorded_progress(monkeypatch):
    """Every progress report of a job, whether written directly or from the side connection."""
    seen: list[tuple[int, str]] = []
    original_report = DatasetJob.report

    def report(self, *, progress=None, message=None):
        seen.append((progress, message))
        return original_report(self, progress=progress, message=message)

    @contextmanager
    def aside(job):
        yield lambda progress, message: seen.append((progress, message))

    monkeypatch.setattr(DatasetJob, "report", report)
    monkeypatch.setattr("lepton_web.jobs.job_progress_aside", aside)
    yield seen


def test_a_split_job_reports_each_step_and_ends_with_the_counts(analyst, dataset, monkeypatch):
    monkeypatch.setattr(split_service, "SPLIT_WRITE_BATCH", 10)
    monkeypatch.setattr(split_service, "ID_BATCH", 10)
    job = dataset_split_start(dataset=dataset, user=analyst, ratios=(0.6, 0.2, 0.2), seed=3)
    assert (job.status, job.kind, job.mapping) == (
        "queued",
        "split",
        {"mode": "random", "ratios": [0.6, 0.2, 0.2], "seed": 3},
    )

    with recorded_progress(monkeypatch) as seen:
        dataset_job_execute(job_id=job.pk)

    job.refresh_from_db()
    dataset.refresh_from_db()
    assert (job.status, job.progress) == ("succeeded", 100)
    assert job.message == "Assigned 18 train, 6 validation, 6 test."
    assert dataset.split_counts == {"train": 18, "validation": 6, "test": 6}
    assert seen == [
        (5, "Reading records."),
        (15, "Grouping near-duplicates among 30 records."),
        (35, "Writing splits: 0 of 30 records."),
        (53, "Writing splits: 10 of 30 records (33%)."),
        (68, "Writing splits: 18 of 30 records (60%)."),
        (79, "Writing splits: 24 of 30 records (80%)."),
        (90, "Writing splits: 30 of 30 records (100%)."),
        (92, "Counting records per split."),
    ]


def test_a_split_job_gives_the_same_splits_as_the_split_itself(analyst, dataset):
    dataset_split(dataset=dataset, user=analyst, ratios=(0.5, 0.25, 0.25), seed=9)
    direct = splits(dataset)
    Record.objects.filter(dataset=dataset).update(split="")

    dataset_split_start(dataset=dataset, user=analyst, ratios=(0.5, 0.25, 0.25), seed=9)
    (job,) = run_queued_jobs(dataset)

    assert job.status == "succeeded"
    assert splits(dataset) == direct


def test_a_resplit_with_the_same_seed_writes_no_record(analyst, dataset):
    dataset_split(dataset=dataset, user=analyst, seed=4)
    dataset_split_start(dataset=dataset, user=analyst, seed=4)
    updates = []

    def count(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("UPDATE") and Record._meta.db_table in sql:
            updates.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        (job,) = run_queued_jobs(dataset)

    assert job.status == "succeeded"
    assert updates == []


def test_a_file_split_job_copies_the_files_splits(analyst):
    csv_text = "text,label,split\none,a,train\ntwo,b,validation\nthree,a,test\nfour,b,train\n"
    dataset = imported_dataset(
        analyst, csv_text, {**TEXT_LABEL, "split_column": "split"}, report=False
    )
    Record.objects.filter(dataset=dataset).update(split="")

    dataset_split_start(dataset=dataset, user=analyst, mode="file")
    (job,) = run_queued_jobs(dataset)

    assert (job.status, job.message) == ("succeeded", "Assigned 2 train, 1 validation, 1 test.")
    assert sorted(splits(dataset).values()) == ["test", "train", "train", "validation"]


def test_a_split_job_fails_with_the_sentence_when_the_records_changed_while_it_waited(
    analyst, dataset
):
    dataset_split_start(dataset=dataset, user=analyst)
    Record.objects.filter(dataset=dataset).update(is_excluded=True)

    (job,) = run_queued_jobs(dataset)

    assert (job.status, job.message) == ("failed", "Failed.")
    assert job.error_message == "All records are excluded; there is nothing to split."


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("drop_exact_duplicates", "Excluded 2 exact copies."),
        ("drop_empty", "Excluded 1 empty text."),
    ],
)
def test_a_fix_job_reports_each_step_and_says_what_it_changed(
    analyst, messy, monkeypatch, kind, message
):
    job = dataset_clean_start(dataset=messy, user=analyst, kind=kind)
    assert (job.status, job.kind, job.mapping) == ("queued", "clean", {"kind": kind})

    with recorded_progress(monkeypatch) as seen:
        dataset_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.progress, job.message) == ("succeeded", 100, message)
    action = CleaningAction.objects.get()
    assert (action.kind, action.created_by) == (kind, analyst)
    count = action.affected_count
    assert [m for _, m in seen] == [
        "Reading records.",
        "Finding what to fix among 6 records.",
        f"Saving changes: 0 of {count} records.",
        f"Saving changes: {count} of {count} records (100%).",
        "Counting records.",
    ]


def test_a_fix_job_with_nothing_left_to_fix_fails_with_the_sentence(analyst, messy):
    dataset_clean_start(dataset=messy, user=analyst, kind="drop_empty")
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_empty")  # done meanwhile

    (job,) = run_queued_jobs(messy)

    assert job.status == "failed"
    assert job.error_message == "Nothing to fix: no record matches this finding any more."
    assert CleaningAction.objects.count() == 1


def test_an_internal_error_fails_the_job_with_a_plain_sentence_and_changes_nothing(
    analyst, messy, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("datasets_app.services.cleaning._after_cleaning", broken)
    job = dataset_clean_start(dataset=messy, user=analyst, kind="drop_exact_duplicates")
    before = rows()

    with pytest.raises(RuntimeError):
        dataset_clean_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == (
        "The cleaning fix stopped because of an internal error, which was logged. "
        "Nothing was changed; try again."
    )
    assert rows() == before
    assert not CleaningAction.objects.exists()


# --- run twice, crash and rerun ---------------------------------------------------------------------
def test_a_split_job_delivered_twice_runs_once(analyst, dataset):
    job = dataset_split_start(dataset=dataset, user=analyst, seed=5)

    first = dataset_split_execute(job_id=job.pk)
    after_first = splits(dataset)
    second = dataset_split_execute(job_id=job.pk)

    assert first.status == "succeeded"
    assert second is None
    assert splits(dataset) == after_first


def test_a_fix_job_delivered_twice_applies_once(analyst, messy):
    job = dataset_clean_start(dataset=messy, user=analyst, kind="drop_exact_duplicates")

    dataset_job_execute(job_id=job.pk)
    dataset_job_execute(job_id=job.pk)

    assert CleaningAction.objects.count() == 1
    assert Record.objects.filter(dataset=messy, is_excluded=True).count() == 2


def test_a_worker_dying_midway_through_a_split_leaves_no_half_split_and_the_rerun_is_right(
    analyst, dataset, monkeypatch
):
    dataset_split(dataset=dataset, user=analyst, ratios=(0.6, 0.2, 0.2), seed=11)
    expected = splits(dataset)
    expected_counts = Dataset.objects.get(pk=dataset.pk).split_counts
    Record.objects.filter(dataset=dataset).update(split="")
    Dataset.objects.filter(pk=dataset.pk).update(split_counts={"": 30})
    monkeypatch.setattr(split_service, "SPLIT_WRITE_BATCH", 4)
    monkeypatch.setattr(split_service, "ID_BATCH", 4)
    write = split_service._split_batch_write
    calls = []

    def dies_on_the_third_batch(ids, split):
        calls.append(len(ids))
        if len(calls) == 3:
            raise WorkerDied()
        write(ids, split)

    monkeypatch.setattr(split_service, "_split_batch_write", dies_on_the_third_batch)
    job = dataset_split_start(dataset=dataset, user=analyst, ratios=(0.6, 0.2, 0.2), seed=11)

    with pytest.raises(WorkerDied):
        dataset_split_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "running"  # the worker is gone; the sweeper finds it silent
    assert set(splits(dataset).values()) == {""}  # two batches were written, none is visible
    assert Dataset.objects.get(pk=dataset.pk).split_counts == {"": 30}

    assert job.recover() == "requeued"
    monkeypatch.setattr(split_service, "_split_batch_write", write)
    (rerun,) = run_queued_jobs(dataset)

    assert (rerun.pk, rerun.status, rerun.attempts) == (job.pk, "succeeded", 2)
    assert splits(dataset) == expected
    assert dataset.split_counts == expected_counts


def test_a_worker_dying_before_a_fix_commits_leaves_nothing_and_the_rerun_applies_it_once(
    analyst, messy, monkeypatch
):
    from datasets_app.services import cleaning as clean_service

    after_cleaning = clean_service._after_cleaning

    def dies(dataset):
        after_cleaning(dataset)
        raise WorkerDied()

    monkeypatch.setattr(clean_service, "_after_cleaning", dies)
    job = dataset_clean_start(dataset=messy, user=analyst, kind="drop_exact_duplicates")
    before = rows()

    with pytest.raises(WorkerDied):
        dataset_clean_execute(job_id=job.pk)

    assert rows() == before
    assert not CleaningAction.objects.exists()
    assert job.recover() == "requeued"
    monkeypatch.setattr(clean_service, "_after_cleaning", after_cleaning)
    (rerun,) = run_queued_jobs(messy)

    assert (rerun.status, rerun.message, rerun.attempts) == (
        "succeeded",
        "Excluded 2 exact copies.",
        2,
    )
    assert CleaningAction.objects.get().affected_count == 2
    assert Record.objects.filter(dataset=messy, is_excluded=True).count() == 2
    assert messy.record_count == 4


# --- progress from the side connection -------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_progress_written_inside_the_write_transaction_is_visible_before_the_commit(analyst):
    if connection.vendor != "postgresql":
        skip_or_fail("SQLite allows one writer at a time; progress there moves at the commit.")
    from lepton_web.jobs import job_progress_aside
    from tests.datasets_app.factories import DatasetJobFactory

    job = DatasetJobFactory(kind=DatasetJob.Kind.SPLIT)
    job.claim()

    with transaction.atomic():
        Record.objects.filter(pk=-1).update(split="train")  # this transaction writes
        with job_progress_aside(job) as report:
            report(55, "Writing splits: 5 of 10 records (50%).")
        seen = DatasetJob.objects.values_list("progress", "message").get(pk=job.pk)

    assert seen == (55, "Writing splits: 5 of 10 records (50%).")


# --- long steps and a busy dataset (real connections, PostgreSQL) -----------------------------
@pytest.mark.django_db(transaction=True)
def test_a_split_job_keeps_its_heartbeat_while_it_computes(
    on_postgres, redis_url, make_user, monkeypatch, settings
):
    import time

    from tests.conftest import broker_for_this_process

    settings.JOB_HEARTBEAT_INTERVAL_SECONDS = 0.2
    analyst = make_user("analyst")
    with broker_for_this_process(redis_url):
        data = imported_dataset(analyst, labelled_csv(10), TEXT_LABEL, report=False)
        job = dataset_split_start(dataset=data, user=analyst)
    beats = []
    assign = split_service.cleaning.assign_splits

    def slow_assign(*args, **kwargs):  # a grouping step longer than the heartbeat interval
        for _ in range(5):
            time.sleep(0.3)
            beats.append(DatasetJob.objects.get(pk=job.pk).heartbeat_at)
        return assign(*args, **kwargs)

    monkeypatch.setattr(split_service.cleaning, "assign_splits", slow_assign)
    split_service.dataset_split_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "succeeded"
    assert len(set(beats)) >= 3  # the sweeper saw it alive during the silent step


@pytest.mark.django_db(transaction=True)
def test_starting_a_split_while_a_fix_saves_says_busy_instead_of_hanging(
    on_postgres, redis_url, make_user
):
    import time

    from datasets_app.services.jobs import BUSY

    analyst = make_user("analyst")
    data = imported_dataset(analyst, labelled_csv(10), TEXT_LABEL, report=False)
    with dataset_row_held(data):
        started = time.monotonic()
        with pytest.raises(ValidationError) as busy:
            dataset_split_start(dataset=data, user=analyst)
        assert busy.value.messages == [BUSY]
        assert time.monotonic() - started < 10
    assert not DatasetJob.objects.filter(kind=DatasetJob.Kind.SPLIT).exists()
