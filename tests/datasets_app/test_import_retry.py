"""Starting an import again: the demo after the broker was down, a Ready dataset re-imported
from its page after a failed attempt; the problem cap; live progress; snapshot copying; what
the pages say about limits and the demo's licence."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils.html import escape
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects
from rest_framework.test import APIClient

from datasets_app.models import Dataset, DatasetJob, Record, SnapshotRecord
from datasets_app.services import (
    dataset_import_execute,
    dataset_import_start,
    demo_dataset_load,
    imports,
    snapshot_create,
)
from datasets_app.services.imports import DEMO_ATTRIBUTION, DEMO_NAME, DemoImportNotQueued
from lepton_web.jobs import JobStatus
from tests.conftest import broker_for_this_process
from tests.datasets_app.factories import imported_dataset, upload

DOWN_BROKER_URL = "redis://127.0.0.1:1/0"
TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
DEMO_NOT_QUEUED = (
    "The demo dataset was saved, but the task queue (Celery broker) cannot be reached, so its "
    "import was not started. Check that the broker is running, then load the demo again to "
    "import it."
)


pytestmark = pytest.mark.usefixtures("redis_broker")


def run_latest_import(dataset: Dataset) -> DatasetJob:
    job = dataset.jobs.filter(kind=DatasetJob.Kind.IMPORT).order_by("-created_at").first()
    dataset_import_execute(job_id=job.pk)
    job.refresh_from_db()
    return job


# --- the demo when the broker is down --------------------------------------------------------
def test_demo_loaded_while_the_broker_is_down_is_imported_by_the_next_load(analyst):
    with broker_for_this_process(DOWN_BROKER_URL), pytest.raises(DemoImportNotQueued) as raised:
        demo_dataset_load(user=analyst)

    assert str(raised.value) == DEMO_NOT_QUEUED
    dataset = Dataset.objects.get(name=DEMO_NAME)
    assert raised.value.dataset.pk == dataset.pk
    assert dataset.status == Dataset.Status.UPLOADED
    assert dataset.source_file.storage.exists(dataset.source_file.name)
    assert not dataset.jobs.exists()

    # The broker is back: loading the demo again starts the import it never got.
    again = demo_dataset_load(user=analyst)

    assert again.pk == dataset.pk
    assert again.status == Dataset.Status.IMPORTING
    job = again.jobs.get(kind=DatasetJob.Kind.IMPORT)
    assert job.status == JobStatus.QUEUED
    # While that import is queued, another load neither duplicates it nor the dataset.
    assert demo_dataset_load(user=analyst).pk == dataset.pk
    assert DatasetJob.objects.count() == 1
    assert Dataset.objects.count() == 1

    dataset_import_execute(job_id=job.pk)
    dataset.refresh_from_db()
    assert (dataset.status, dataset.record_count) == (Dataset.Status.READY, 1540)
    # Imported: a later load returns it as it is.
    assert demo_dataset_load(user=analyst).pk == dataset.pk
    assert dataset.jobs.filter(kind=DatasetJob.Kind.IMPORT).count() == 1


def test_demo_button_while_the_broker_is_down_shows_the_saved_dataset_then_imports_it(
    analyst_client,
):
    with broker_for_this_process(DOWN_BROKER_URL):
        response = analyst_client.post("/datasets/demo/", follow=True)

    dataset = Dataset.objects.get(name=DEMO_NAME)
    assertRedirects(response, f"/datasets/{dataset.pk}/")
    assertContains(response, escape(DEMO_NOT_QUEUED))
    assertNotContains(response, "nothing was saved")
    # The list page still offers the demo button once a dataset exists.
    assertContains(analyst_client.get("/datasets/"), "Load the demo dataset")

    response = analyst_client.post("/datasets/demo/", follow=True)

    assertRedirects(response, f"/datasets/{dataset.pk}/")
    assertContains(response, "The demo dataset is being imported.")
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.IMPORTING
    assert run_latest_import(dataset).status == JobStatus.SUCCEEDED

    response = analyst_client.post("/datasets/demo/", follow=True)
    assertContains(response, "The demo dataset is already loaded.")


def test_demo_api_while_the_broker_is_down_is_503_saying_the_dataset_was_saved(analyst):
    api = APIClient()
    api.force_authenticate(analyst)

    with broker_for_this_process(DOWN_BROKER_URL):
        response = api.post("/api/v1/datasets/demo/")

    assert response.status_code == 503
    assert response.json()["detail"] == DEMO_NOT_QUEUED
    response = api.post("/api/v1/datasets/demo/")
    assert response.status_code == 201
    assert response.json()["status"] == "importing"
    assert response.json()["latest_import"]["status"] == "queued"


def test_upload_with_a_mapping_while_the_broker_is_down_answers_with_the_stored_dataset(
    analyst,
):
    api = APIClient()
    api.force_authenticate(analyst)
    upload_file = SimpleUploadedFile("d.csv", b"text,label\nhello,a\nworld,b\n")

    with broker_for_this_process(DOWN_BROKER_URL):
        response = api.post(
            "/api/v1/datasets/",
            {"file": upload_file, "mapping": '{"text_columns": ["text"]}'},
            format="multipart",
        )

    # The file is kept: the answer is the dataset, with why its import did not start, so the
    # client can POST .../import/ later without uploading again.
    assert response.status_code == 201
    body = response.json()
    assert body["import_errors"] == {
        "broker": [
            "The task queue (Celery broker) cannot be reached, so the job was not started. "
            "Check that the broker is running, then try again."
        ]
    }
    dataset = Dataset.objects.get()
    assert body["id"] == dataset.pk
    assert dataset.status == Dataset.Status.UPLOADED
    assert dataset.source_file.storage.exists(dataset.source_file.name)
    again = api.post(
        f"/api/v1/datasets/{dataset.pk}/import/", {"text_columns": ["text"]}, format="json"
    )
    assert again.status_code == 202
    assert run_latest_import(dataset).status == JobStatus.SUCCEEDED


# --- re-import from the page -----------------------------------------------------------------
RETRY_CSV = "text,label,lang\nWhere is my card,card,en\nMein PIN,pin,de\nTop up,top_up,en\n"


def test_ready_dataset_page_offers_a_collapsed_reimport_with_the_mapping_form(
    analyst_client, analyst
):
    dataset = imported_dataset(analyst, RETRY_CSV, TEXT_LABEL, report=False)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    content = response.content.decode()
    assert '<details data-testid="reimport">' in content
    assertContains(response, "Import again with another mapping")
    assertContains(response, f'action="/datasets/{dataset.pk}/import/"')
    assertNotContains(response, 'data-testid="reimport-problems"')


def test_ready_dataset_can_be_read_again_with_other_settings_then_imported_again(
    analyst_client, analyst
):
    # The first row was data, not a header; the file was read with one.
    headless = "Where is my card,card\nMein PIN,pin\nTop up,top_up\n"
    dataset = imported_dataset(
        analyst, headless, {"text_columns": ["Where is my card"]}, report=False
    )
    assert dataset.record_count == 2
    page = analyst_client.get(f"/datasets/{dataset.pk}/")
    assertContains(page, f'action="/datasets/{dataset.pk}/detect/"')

    # An override no file can be read with: refused next to its field, the section open.
    refused = analyst_client.post(f"/datasets/{dataset.pk}/detect/", {"encoding": "rot13"})
    assert refused.status_code == 400
    assert '<details data-testid="reimport" open>' in refused.content.decode()
    dataset.refresh_from_db()
    assert dataset.detection["columns"] == ["Where is my card", "card"]

    answer = analyst_client.post(f"/datasets/{dataset.pk}/detect/", {"header": "no"})
    assert answer.status_code == 302
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.READY  # the current records stay meanwhile
    first, second = dataset.detection["columns"]
    analyst_client.post(
        f"/datasets/{dataset.pk}/import/",
        {"text_columns": [first], "text_separator": "\\n", "label_column": second},
    )
    assert run_latest_import(dataset).status == JobStatus.SUCCEEDED
    dataset.refresh_from_db()
    assert sorted(
        dataset.records.filter(import_run_id=dataset.active_import_id).values_list("text", "label")
    ) == [("Mein PIN", "pin"), ("Top up", "top_up"), ("Where is my card", "card")]


def test_viewer_sees_no_reimport_form(client_as, analyst):
    dataset = imported_dataset(analyst, RETRY_CSV, TEXT_LABEL, report=False)

    response = client_as("viewer").get(f"/datasets/{dataset.pk}/")

    assertNotContains(response, "Import again with another mapping")


def test_failed_reimport_shows_its_problems_and_the_form_and_a_good_mapping_then_succeeds(
    analyst_client, analyst
):
    dataset = imported_dataset(analyst, RETRY_CSV, TEXT_LABEL, report=False)
    first_import = dataset.active_import_id

    # "lang" holds en/de, which are not splits: the import fails row by row.
    response = analyst_client.post(
        f"/datasets/{dataset.pk}/import/",
        {
            "text_columns": ["text"],
            "text_separator": "\\n",
            "label_column": "label",
            "split_column": "lang",
        },
    )
    assertRedirects(response, f"/datasets/{dataset.pk}/", fetch_redirect_response=False)
    assert run_latest_import(dataset).status == JobStatus.FAILED

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.READY
    assert dataset.active_import_id == first_import
    content = response.content.decode()
    assert '<details data-testid="reimport" open>' in content
    reimport = content[content.index('data-testid="reimport"') :]
    reimport = reimport[: reimport.index("</details>")]
    assert 'data-testid="reimport-problems"' in reimport
    assert escape("has split 'en'. Use train, validation or test") in reimport
    assert escape("has split 'de'.") in reimport
    assert f'action="/datasets/{dataset.pk}/import/"' in reimport
    # The form shows the mapping that failed, to be changed.
    assert re.search(r'<option value="lang" selected>lang</option>', reimport)

    response = analyst_client.post(
        f"/datasets/{dataset.pk}/import/",
        {
            "text_columns": ["text"],
            "text_separator": "\\n",
            "label_column": "label",
            "split_column": "",
        },
    )
    assertRedirects(response, f"/datasets/{dataset.pk}/", fetch_redirect_response=False)
    assert run_latest_import(dataset).status == JobStatus.SUCCEEDED

    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.READY
    assert dataset.active_import_id != first_import
    assert dataset.record_count == 3
    assert Record.objects.get(import_run_id=dataset.active_import_id, source_row=2).metadata == {
        "lang": "de"
    }
    response = analyst_client.get(f"/datasets/{dataset.pk}/")
    assertContains(response, '<details data-testid="reimport">')
    assertNotContains(response, 'data-testid="reimport-problems"')


def test_invalid_reimport_form_opens_the_section_with_the_errors(analyst_client, analyst):
    dataset = imported_dataset(analyst, RETRY_CSV, TEXT_LABEL, report=False)

    response = analyst_client.post(f"/datasets/{dataset.pk}/import/", {"label_column": "label"})

    assert response.status_code == 400
    assertContains(response, '<details data-testid="reimport" open>', status_code=400)
    assertContains(response, "This field is required.", status_code=400)


# --- the problem cap -------------------------------------------------------------------------
def bad_split_csv(bad: int, good: int = 15) -> str:
    """``bad`` rows whose split is not a split, then good rows."""
    lines = ["text,label,split"]
    lines += [f"bad {n},x,bogus" for n in range(bad)]
    lines += [f"good {n},x,train" for n in range(good)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("bad", "chunk_rows", "summary_start"),
    [
        (25, 10, "Nothing was imported: 20 problems (and more) found."),
        (20, 10, "Nothing was imported: 20 problems found."),
        # All in one chunk: the chunk keeps one problem past those listed.
        (25, 25_000, "Nothing was imported: 20 problems (and more) found."),
        (20, 25_000, "Nothing was imported: 20 problems found."),
    ],
)
def test_problem_cap_says_and_more_only_when_there_are_more(
    analyst, monkeypatch, bad, chunk_rows, summary_start
):
    # Chunks of 10 rows: the 20th problem is found with rows still unread.
    monkeypatch.setattr(imports, "IMPORT_CHUNK_ROWS", chunk_rows)
    dataset = upload(analyst, bad_split_csv(bad))
    job = dataset_import_start(
        dataset=dataset, user=analyst, mapping={**TEXT_LABEL, "split_column": "split"}
    )

    dataset_import_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert len(job.problems) == 20
    assert all("has split 'bogus'" in problem["message"] for problem in job.problems)
    assert job.error_message.startswith(summary_start)
    assert ("(and more)" in job.error_message) == (bad > 20)
    dataset.refresh_from_db()
    assert dataset.status_message == job.error_message
    assert not Record.objects.exists()


# --- live progress ---------------------------------------------------------------------------
def test_import_writes_rows_done_rate_time_left_and_message_after_each_chunk(analyst, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_CHUNK_ROWS", 500)
    rows = 3000
    content = "text,label\n" + "".join(f"message number {n},l{n % 7}\n" for n in range(rows))
    dataset = upload(analyst, content)
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    seen: list[dict] = []
    real_iter_records = imports.iter_records

    def observed_iter_records(*args, **kwargs):
        # After each chunk the import has written its progress: read the job row then.
        for chunk in real_iter_records(*args, **kwargs):
            yield chunk
            seen.append(
                DatasetJob.objects.filter(pk=job.pk)
                .values("rows_done", "rows_per_second", "seconds_left", "message", "progress")
                .get()
            )

    monkeypatch.setattr(imports, "iter_records", observed_iter_records)

    dataset_import_execute(job_id=job.pk)

    assert [row["rows_done"] for row in seen] == list(range(500, rows + 1, 500))
    for row in seen:
        assert row["rows_per_second"] > 0
        assert re.fullmatch(
            rf"{row['rows_done']:,} rows read at [\d,]+ rows/s\.", row["message"]
        ), row["message"]
    assert seen[0]["seconds_left"] is not None
    assert seen[0]["seconds_left"] >= 0
    assert seen[-1]["seconds_left"] in (None, 0)
    assert [row["progress"] for row in seen] == sorted(row["progress"] for row in seen)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.rows_done == rows
    assert re.fullmatch(r"Imported 3,000 records in [\d.]+ s\.", job.message)


# --- snapshots -------------------------------------------------------------------------------
def test_snapshot_copies_its_records_with_one_insert_select(on_postgres, analyst):
    dataset = imported_dataset(
        analyst,
        "text,label\n" + "".join(f"text {n},l{n % 3}\n" for n in range(200)),
        TEXT_LABEL,
        report=False,
    )

    with CaptureQueriesContext(connection) as queries:
        snapshot = snapshot_create(dataset=dataset, user=analyst)

    inserts = [
        q["sql"]
        for q in queries.captured_queries
        if re.match(r"\s*INSERT\s+INTO\s+\"?datasets_app_snapshotrecord\"?", q["sql"], re.I)
    ]
    assert len(inserts) == 1, inserts
    assert "SELECT" in inserts[0].upper()
    assert SnapshotRecord.objects.filter(snapshot=snapshot).count() == 200 == snapshot.record_count


# --- what the pages say ----------------------------------------------------------------------
def test_datasets_page_states_the_configured_limits(analyst_client):
    with override_settings(
        DATASET_MAX_FILE_BYTES=3 * 1024 * 1024,
        DATASET_MAX_COLUMNS=17,
        DATASET_MAX_TEXT_CHARS=12345,
        DATASET_MAX_UNCOMPRESSED_BYTES=5 * 1024**3,
    ):
        response = analyst_client.get("/datasets/")

    assertContains(response, "optionally .gz (inflating to at most 5 GB).")
    assertContains(
        response,
        "Up to 3 MB, 17 columns; texts longer than 12,345 characters are cut there and flagged "
        "“truncated”.",
    )

    with override_settings(
        DATASET_MAX_FILE_BYTES=512 * 1024, DATASET_MAX_COLUMNS=4, DATASET_MAX_TEXT_CHARS=80
    ):
        response = analyst_client.get("/datasets/")

    assertContains(
        response,
        "Up to 512 KB, 4 columns; texts longer than 80 characters are cut there and flagged "
        "“truncated”.",
    )


def test_demo_dataset_page_shows_its_licence_and_attribution(analyst_client, analyst):
    dataset = demo_dataset_load(user=analyst)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    assertContains(response, "<dt>Licence</dt><dd>CC BY 4.0</dd>", html=False)
    assertContains(
        response, f'<p class="attribution" data-testid="attribution">{escape(DEMO_ATTRIBUTION)}</p>'
    )


# --- the page reloads when the job ends: it must see the dataset settled then -----------------
@pytest.mark.django_db(transaction=True)
def test_a_failed_import_and_its_dataset_status_are_seen_together(analyst, monkeypatch):
    """The dataset page reloads as soon as its import job has ended. Another connection (that
    page) must never see the job failed while the dataset still says Importing."""
    import threading

    from django.db import connections

    seen: list[tuple[str, str]] = []
    settle = imports._dataset_settle

    def look_from_another_connection(job_id: int, dataset_id: int) -> None:
        try:
            seen.append(
                (
                    DatasetJob.objects.get(pk=job_id).status,
                    Dataset.objects.get(pk=dataset_id).status,
                )
            )
        finally:
            connections.close_all()

    def settle_watched(dataset_id: int, *, message: str) -> None:
        job_id = DatasetJob.objects.filter(dataset_id=dataset_id).latest("id").pk
        reader = threading.Thread(target=look_from_another_connection, args=(job_id, dataset_id))
        reader.start()
        reader.join()
        settle(dataset_id, message=message)

    monkeypatch.setattr(imports, "_dataset_settle", settle_watched)
    dataset = upload(analyst, "text,label\nfine,a\nnot, fine,a\n")
    job = dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)

    dataset_import_execute(job_id=job.pk)

    # Between the job's end and the dataset's settling, the other connection saw neither.
    assert seen == [(JobStatus.RUNNING, Dataset.Status.IMPORTING)]
    job.refresh_from_db()
    dataset.refresh_from_db()
    assert (job.status, dataset.status) == (JobStatus.FAILED, Dataset.Status.FAILED)
