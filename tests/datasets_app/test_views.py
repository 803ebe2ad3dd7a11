"""The dataset pages: list and upload, detail before and after import, records, and roles."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects

from datasets_app import services
from datasets_app.models import CleaningAction, Dataset, DatasetJob, Record, Snapshot
from tests.datasets_app.factories import (
    import_now,
    imported_dataset,
    run_queued_jobs,
    run_queued_search_index,
    upload,
)

TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
CSV = "text,topic,label\nWhere is my card,cards,card\nI lost my PIN,security,pin\nTop up failed,payments,top_up\n"
MESSY_CSV = (
    "text,label\n"
    "Where is my card?,card\n"
    "Where is my card?,card\n"
    "where is my card,card\n"
    "I lost my PIN,pin\n"
    "How do I top up?,top_up\n"
)
CHOOSE_A_FILE = "Choose a file to upload (CSV, TSV, JSON Lines, optionally .gz)."


pytestmark = pytest.mark.usefixtures("redis_broker")


def csv_file(text: str = CSV, name: str = "banking.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def json_script(response, element_id: str):
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, f"no json_script #{element_id}"
    return json.loads(match.group(1))


def state() -> tuple:
    return (
        list(
            Dataset.objects.order_by("id").values_list(
                "id", "status", "status_message", "mapping", "record_count", "label_counts_base"
            )
        ),
        list(
            Record.objects.order_by("id").values_list("id", "text", "label", "split", "is_excluded")
        ),
        list(DatasetJob.objects.order_by("id").values_list("id", "status")),
        list(Snapshot.objects.values_list("id")),
        list(CleaningAction.objects.values_list("id", "undone_at")),
    )


# --- list and upload ---------------------------------------------------------------------------------
def test_empty_list_offers_analysts_the_demo_dataset_and_the_upload_form(client_as):
    response = client_as("analyst").get("/datasets/")

    assert response.status_code == 200
    assertContains(response, "No datasets yet")
    assertContains(response, "Load the demo dataset")
    assertContains(response, 'id="upload-form"')


def test_empty_list_offers_viewers_neither_the_demo_nor_the_upload_form(client_as):
    response = client_as("viewer").get("/datasets/")

    assert response.status_code == 200
    assertContains(response, "No datasets yet")
    assertNotContains(response, "Load the demo dataset")
    assertNotContains(response, 'id="upload-form"')
    assertNotContains(response, 'name="file"')


def test_list_shows_each_dataset_with_its_status_and_record_count(analyst_client, analyst):
    imported_dataset(analyst, CSV, TEXT_LABEL, name="Banking", report=False)

    response = analyst_client.get("/datasets/")

    assertContains(response, "<strong>Banking</strong>", html=True)
    assertContains(response, '<span class="badge badge-ready">Ready</span>', html=True)
    assertNotContains(response, "No datasets yet")


def test_plain_form_upload_redirects_to_the_new_datasets_page(analyst_client):
    response = analyst_client.post("/datasets/upload/", {"file": csv_file(), "name": ""})

    dataset = Dataset.objects.get()
    assertRedirects(response, f"/datasets/{dataset.pk}/", fetch_redirect_response=False)
    assert (dataset.name, dataset.status, dataset.source_filename) == (
        "banking",
        "uploaded",
        "banking.csv",
    )


def test_upload_asking_for_json_answers_201_with_the_page_to_go_to(analyst_client):
    response = analyst_client.post(
        "/datasets/upload/",
        {"file": csv_file(), "name": "Banking"},
        headers={"Accept": "application/json"},
    )

    dataset = Dataset.objects.get()
    assert response.status_code == 201
    assert response.json() == {"redirect": f"/datasets/{dataset.pk}/"}
    assert dataset.name == "Banking"


def test_json_upload_of_an_oversized_file_answers_400_with_the_sentence(analyst_client, settings):
    settings.DATASET_MAX_FILE_BYTES = 100

    response = analyst_client.post(
        "/datasets/upload/",
        {"file": csv_file("text,label\n" + "x" * 289 + ",a\n")},
        headers={"Accept": "application/json"},
    )

    message = "Files can be up to 100 bytes; this one is 303 bytes."
    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"file": [message]}}
    assert not Dataset.objects.exists()


def test_json_upload_without_a_file_answers_400(analyst_client):
    response = analyst_client.post(
        "/datasets/upload/", {"name": "x"}, headers={"Accept": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == {"detail": CHOOSE_A_FILE, "errors": {"file": [CHOOSE_A_FILE]}}
    assert not Dataset.objects.exists()


def test_plain_upload_without_a_file_rerenders_with_the_sentence(analyst_client):
    response = analyst_client.post("/datasets/upload/", {"name": "Mine"})

    assert response.status_code == 400
    assertContains(response, CHOOSE_A_FILE, status_code=400)
    assertContains(response, 'value="Mine"', status_code=400)
    assert not Dataset.objects.exists()


def test_plain_upload_of_an_oversized_file_rerenders_with_the_limit(analyst_client, settings):
    settings.DATASET_MAX_FILE_BYTES = 100

    response = analyst_client.post(
        "/datasets/upload/", {"file": csv_file("text,label\n" + "x" * 289 + ",a\n"), "name": "Big"}
    )

    assert response.status_code == 400
    assertContains(
        response, "Files can be up to 100 bytes; this one is 303 bytes.", status_code=400
    )
    assertContains(response, 'value="Big"', status_code=400)
    assert not Dataset.objects.exists()


def test_plain_upload_of_an_empty_file_says_the_file_is_empty(analyst_client):
    response = analyst_client.post("/datasets/upload/", {"file": csv_file("", "empty.csv")})

    assertContains(
        response, "The file is empty. Choose a file with a header and rows.", status_code=400
    )
    assert not Dataset.objects.exists()


def test_json_upload_of_an_empty_file_says_the_file_is_empty(analyst_client):
    response = analyst_client.post(
        "/datasets/upload/",
        {"file": csv_file("", "empty.csv")},
        headers={"Accept": "application/json"},
    )

    message = "The file is empty. Choose a file with a header and rows."
    assert response.json() == {"detail": message, "errors": {"file": [message]}}
    assert not Dataset.objects.exists()


def test_upload_of_a_file_that_is_not_text_keeps_it_and_says_what_it_is(analyst_client):
    png = SimpleUploadedFile("chart.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    response = analyst_client.post("/datasets/upload/", {"file": png})

    dataset = Dataset.objects.get()
    assertRedirects(response, f"/datasets/{dataset.pk}/", fetch_redirect_response=False)
    page = analyst_client.get(f"/datasets/{dataset.pk}/")
    assertContains(page, "This file is a PNG image, not a table of text.")
    assertContains(page, "Import failed")
    assert dataset.source_size_bytes == 72


# --- detail -------------------------------------------------------------------------------------------
def test_detail_before_import_shows_the_preview_and_the_mapping_form(analyst_client, analyst):
    dataset = upload(analyst, CSV)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    assert response.status_code == 200
    assertContains(response, 'data-testid="preview"')
    assertContains(
        response,
        "<tr><td>I lost my PIN</td><td>security</td><td>pin</td></tr>",
        html=True,
    )
    assertContains(response, 'data-testid="mapping-form"')
    assertContains(
        response,
        '<input type="checkbox" name="text_columns" value="text" id="id_text_columns_0" checked>',
        html=True,
    )
    assertContains(response, '<option value="label" selected>label</option>', html=True)
    assertContains(response, "Start import")
    assertNotContains(response, 'data-testid="quality-report"')


def test_starting_the_import_from_the_form_queues_it_and_shows_its_progress(
    analyst_client, analyst
):
    dataset = upload(analyst, CSV)

    response = analyst_client.post(
        f"/datasets/{dataset.pk}/import/",
        {"text_columns": ["text", "topic"], "text_separator": "\\n", "label_column": "label"},
    )

    assertRedirects(response, f"/datasets/{dataset.pk}/", fetch_redirect_response=False)
    job = DatasetJob.objects.get()
    assert job.mapping == {
        "text_columns": ["text", "topic"],
        "text_separator": "\n",
        "label_column": "label",
        "split_column": None,
        "id_column": None,
    }
    page = analyst_client.get(f"/datasets/{dataset.pk}/")
    assertContains(page, "Import started.")
    assertContains(page, 'data-testid="job-progress"')
    assertContains(page, f'hx-get="/jobs/datasets_app.datasetjob/{job.pk}/progress/?reload=1"')
    assertContains(page, "Cancel import")
    assertNotContains(page, 'data-testid="mapping-form"')


def test_the_mapping_form_without_a_text_column_rerenders_with_the_error(analyst_client, analyst):
    dataset = upload(analyst, CSV)

    response = analyst_client.post(f"/datasets/{dataset.pk}/import/", {"label_column": "label"})

    assertContains(response, "This field is required.", status_code=400)
    assertContains(response, 'data-testid="mapping-form"', status_code=400)
    assert not DatasetJob.objects.exists()


def test_detail_after_a_failed_import_lists_the_problems_with_line_numbers(analyst_client, analyst):
    dataset = upload(analyst, "text,label\nfine,a\nnot, fine,b\nfine too,a\n")
    import_now(dataset, analyst, TEXT_LABEL)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    message = (
        "Line 3 has 3 fields but the header has 2. "
        "A delimiter inside a value needs the value in double quotes."
    )
    assertContains(
        response,
        f'<ul class="problems" data-testid="problems"><li>{message}</li></ul>',
        html=True,
    )
    assertContains(response, escape(f"Nothing was imported: 1 problem found. First: {message}"))
    assertContains(response, "Retry import")
    assertContains(response, 'data-testid="preview"')


@pytest.mark.parametrize(
    ("csv_text", "shown"),
    [
        ("text,label\nfine,a\nnot, fine,b\nfine too,a\n", "Import failed"),
        ("text,label\nfine,a\nfine too,b\n", "Ready"),
    ],
)
def test_detail_read_while_the_worker_ends_the_import_shows_how_it_ended(
    analyst_client, analyst, monkeypatch, csv_text, shown
):
    """The page reads the dataset, then its jobs: a worker that commits the import's end
    between the two reads left the page at "Importing" with its progress no longer polling."""
    from datasets_app import views
    from tests.conftest import _redis_url, broker_for_this_process

    dataset = upload(analyst, csv_text)
    with broker_for_this_process(_redis_url()):
        job = services.dataset_import_start(dataset=dataset, user=analyst, mapping=TEXT_LABEL)
    read = views.dataset_get_for_user

    def read_then_the_worker_commits(**kwargs):
        found = read(**kwargs)
        assert found.status == Dataset.Status.IMPORTING
        services.dataset_import_execute(job_id=job.pk)
        return found

    monkeypatch.setattr(views, "dataset_get_for_user", read_then_the_worker_commits)
    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    assertContains(response, f'data-testid="dataset-status">{shown}</span>')
    assertNotContains(response, 'data-testid="dataset-status">Importing')


def test_detail_after_success_shows_counts_chart_data_and_the_quality_report(
    analyst_client, analyst
):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    assertContains(response, '<dd data-testid="record-count">5</dd>', html=True)
    assertContains(response, 'data-testid="label-chart"')
    chart = json_script(response, "label-chart-data")
    assert dict(zip(chart["labels"], chart["values"], strict=True)) == {
        "card": 3,
        "pin": 1,
        "top_up": 1,
    }
    histogram = json_script(response, "length-chart-data")
    assert sum(histogram["counts"]) == 5
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1
    assertContains(response, 'data-testid="quality-report"')
    assertContains(response, 'data-kind="exact_duplicate"')
    assertContains(response, "1 record repeats an earlier record with the same text and label.")
    assertContains(response, "Exclude copies, keep the first")
    assertContains(response, "Browse records")
    # Reading and mapping are only offered collapsed, to import again.
    assertNotContains(response, "<h2>Map the columns</h2>")
    assertNotContains(response, "<h2>How to read the file</h2>")
    assertContains(response, '<details data-testid="reimport">')


def test_label_chart_shows_the_forty_most_frequent_labels_most_frequent_first(
    analyst_client, analyst
):
    rows = [f"text {n} of {i},frequent_label_{i:02d}" for i in range(40) for n in range(2 + i)]
    rows += ["a rare one,z"]
    dataset = imported_dataset(analyst, "text,label\n" + "\n".join(rows) + "\n", TEXT_LABEL)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    chart = json_script(response, "label-chart-data")
    assert chart["labels"] == [f"frequent_label_{i:02d}" for i in reversed(range(40))]
    assert chart["values"] == [2 + i for i in reversed(range(40))]


def test_cleaning_from_the_page_and_undoing_it_say_what_happened(analyst_client, analyst):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL)
    url = f"/datasets/{dataset.pk}"

    started = analyst_client.post(f"{url}/clean/", {"kind": "drop_exact_duplicates"})

    assertRedirects(started, f"{url}/#quality-report", fetch_redirect_response=False)
    queued = analyst_client.get(f"{url}/")
    assertContains(queued, 'data-testid="clean-job"')
    assertContains(queued, "Cleaning fix of")
    assertContains(queued, "Waiting for a worker")
    assertContains(queued, "Fixes can be applied again once the running fix finishes.")
    (job,) = run_queued_jobs(dataset)
    assert (job.status, job.message) == ("succeeded", "Excluded 1 exact copy.")
    cleaned = analyst_client.get(f"{url}/")
    assertContains(cleaned, "Excluded 1 exact copy.")
    assertContains(cleaned, '<dd data-testid="record-count">4</dd>', html=True)
    assertContains(cleaned, "Undo last cleaning step")
    assertNotContains(cleaned, 'data-testid="fixes-wait"')
    undone = analyst_client.post(f"{url}/clean/undo/", follow=True)
    assertContains(undone, "The last cleaning step was undone.")
    assertContains(undone, '<dd data-testid="record-count">5</dd>', html=True)
    again = analyst_client.post(f"{url}/clean/undo/", follow=True)
    assertContains(again, "There is no cleaning step to undo.")


def test_split_percentages_that_do_not_add_up_rerender_with_the_sentence(analyst_client, analyst):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, report=False)

    response = analyst_client.post(
        f"/datasets/{dataset.pk}/split/",
        {
            "mode": "random",
            "train_percent": 70,
            "validation_percent": 10,
            "test_percent": 10,
            "seed": 1,
        },
    )

    assertContains(
        response, "The three percentages must add up to 100; they add up to 90.", status_code=400
    )
    assert set(Record.objects.values_list("split", flat=True)) == {""}


def test_splitting_and_snapshotting_from_the_page(analyst_client, analyst):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, report=False)
    url = f"/datasets/{dataset.pk}"

    split = analyst_client.post(
        f"{url}/split/",
        {
            "mode": "random",
            "train_percent": 60,
            "validation_percent": 20,
            "test_percent": 20,
            "seed": 1,
        },
    )
    assertRedirects(split, f"{url}/#splits", fetch_redirect_response=False)
    assert set(Record.objects.values_list("split", flat=True)) == {""}  # queued, not done
    (job,) = run_queued_jobs(dataset)
    page = analyst_client.get(f"{url}/")
    snapshot = analyst_client.post(f"{url}/snapshots/", {"note": "first"}, follow=True)

    assert job.status == "succeeded"
    assert job.message.startswith("Assigned ")
    assertContains(page, job.message)
    assertContains(page, 'data-testid="split-counts"')
    assert not Record.objects.filter(split="").exists()
    assertContains(snapshot, "Snapshot v1 created.")
    assertContains(snapshot, 'data-testid="snapshots"')
    assertContains(snapshot, "first")
    assert Snapshot.objects.get().record_count == 5


SPLIT_POST = {
    "mode": "random",
    "train_percent": 60,
    "validation_percent": 20,
    "test_percent": 20,
    "seed": 1,
}


def test_a_split_the_service_refuses_rerenders_with_the_sentence_by_the_form(
    analyst_client, analyst
):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, report=False)
    before = state()

    response = analyst_client.post(f"/datasets/{dataset.pk}/split/", {**SPLIT_POST, "mode": "file"})

    assertContains(
        response,
        '<span class="field-error">The file had no split column mapped. Choose a random split.</span>',
        status_code=400,
        html=True,
    )
    assert state() == before  # nothing queued


def test_while_a_split_runs_the_page_disables_the_buttons_and_refuses_another(
    analyst_client, analyst
):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL)
    url = f"/datasets/{dataset.pk}"
    analyst_client.post(f"{url}/split/", SPLIT_POST)

    page = analyst_client.get(f"{url}/")
    again = analyst_client.post(f"{url}/split/", SPLIT_POST)
    fix = analyst_client.post(f"{url}/clean/", {"kind": "drop_exact_duplicates"})

    busy = "Splits of this dataset are being assigned. Wait for that to finish, then try again."
    assertContains(page, 'data-testid="split-job"')
    assertContains(page, "Splits can be assigned once the running split finishes.")
    assertContains(
        page, '<button class="btn" type="submit" disabled>Assign splits</button>', html=True
    )
    assertContains(page, 'value="drop_exact_duplicates" disabled')
    assertContains(again, busy, status_code=400)
    assertContains(
        fix,
        f'<div class="flash flash-error" role="alert" data-testid="clean-error">{busy}</div>',
        status_code=400,
        html=True,
    )
    assert dataset.jobs.filter(kind__in=["split", "clean"]).count() == 1
    (job,) = run_queued_jobs(dataset)
    after = analyst_client.get(f"{url}/")
    assert job.status == "succeeded"
    assertContains(after, '<button class="btn" type="submit">Assign splits</button>', html=True)


def test_an_unknown_fix_from_the_page_says_so_and_queues_nothing(analyst_client, analyst):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, report=False)
    before = state()

    response = analyst_client.post(f"/datasets/{dataset.pk}/clean/", {"kind": "delete_all"})

    assertContains(response, "Unknown fix &#x27;delete_all&#x27;.", status_code=400)
    assert state() == before


def test_export_from_the_page_is_a_csv_download(analyst_client, analyst):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, name="Banking", report=False)

    response = analyst_client.get(f"/datasets/{dataset.pk}/export/", {"format": "csv"})

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="Banking-current.csv"'
    assert b"".join(response.streaming_content).decode().splitlines()[:2] == [
        "source_row,text,label,split",
        "1,Where is my card?,card,",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"format": "xlsx"}, "Choose CSV or JSON Lines for the export."),
        ({"snapshot": "abc"}, "This dataset has no such snapshot."),
        ({"snapshot": "9" * 25}, "This dataset has no such snapshot."),
    ],
)
def test_export_with_bad_parameters_goes_back_with_a_message(
    analyst_client, analyst, params, message
):
    dataset = imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, report=False)

    response = analyst_client.get(f"/datasets/{dataset.pk}/export/", params, follow=True)

    assertRedirects(response, f"/datasets/{dataset.pk}/")
    assertContains(response, message)


def test_job_progress_asks_the_page_to_reload_once_the_import_ended(analyst_client, analyst):
    dataset = imported_dataset(analyst, CSV, TEXT_LABEL, report=False)
    job = dataset.active_import

    response = analyst_client.get(
        f"/jobs/datasets_app.datasetjob/{job.pk}/progress/?reload=1",
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    assert response["HX-Refresh"] == "true"
    assertContains(response, 'data-status="succeeded"')
    assertNotContains(response, "hx-trigger")


# --- records ---------------------------------------------------------------------------------------------
@pytest.fixture
def many(analyst) -> Dataset:
    rows = "".join(f"message number {n},{'even' if n % 2 == 0 else 'odd'}\n" for n in range(1, 121))
    return imported_dataset(analyst, "text,label\n" + rows, TEXT_LABEL, report=False)


def rows_on(response) -> list[int]:
    return [
        int(n) for n in re.findall(r'<td class="small muted">(\d+)</td>', response.content.decode())
    ]


def test_records_page_pages_with_next_page_links_until_the_last_record(analyst_client, many):
    url = f"/datasets/{many.pk}/records/"
    seen, pages, response = [], 0, analyst_client.get(url)
    while True:
        assert response.status_code == 200
        pages += 1
        seen += rows_on(response)
        link = re.search(r'href="\?([^"]*after=\d+)">Next page</a>', response.content.decode())
        if not link:
            break
        assertContains(response, "Next page")
        response = analyst_client.get(f"{url}?{link.group(1).replace('&amp;', '&')}")

    assert seen == list(range(1, 121))
    assert pages == 3
    assertContains(response, "First page")


def test_records_page_keeps_filters_across_pages(analyst_client, many):
    url = f"/datasets/{many.pk}/records/"

    first = analyst_client.get(url, {"label": "even", "search": "number"})
    link = re.search(r'href="\?([^"]*)">Next page</a>', first.content.decode()).group(1)
    second = analyst_client.get(f"{url}?{link.replace('&amp;', '&')}")

    assert rows_on(first) == list(range(2, 101, 2))
    assert rows_on(second) == list(range(102, 121, 2))
    assertNotContains(second, "Next page")


@pytest.mark.parametrize("after", ["abc", "-5", "1" * 25, "-" + "9" * 25, "1e5", ""])
def test_records_page_with_a_bad_after_value_shows_the_first_records_not_an_error(
    analyst_client, many, after
):
    response = analyst_client.get(f"/datasets/{many.pk}/records/", {"after": after})

    assert response.status_code == 200
    assert rows_on(response)[:3] == [1, 2, 3]


def test_records_page_says_when_nothing_matches(analyst_client, many):
    response = analyst_client.get(f"/datasets/{many.pk}/records/", {"search": "zebra"})

    assertContains(response, "No records match these filters.")
    assertNotContains(response, "Next page")


def test_records_page_says_how_a_search_matched(analyst_client, many):
    from django.db import connection

    url = f"/datasets/{many.pk}/records/"

    before = analyst_client.get(url, {"search": "number 7"})
    run_queued_search_index(many)
    after = analyst_client.get(url, {"search": "7 number"})

    assert rows_on(before) == [7, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79]
    assertContains(before, "The word index of this dataset is still being built")
    assert rows_on(after) == [7]  # words in any order, on SQLite (FTS5) as on PostgreSQL
    engine = "PostgreSQL full-text search" if connection.vendor == "postgresql" else "SQLite FTS5"
    assertContains(after, f"Word search ({engine}):")


# --- roles ---------------------------------------------------------------------------------------------------
@pytest.fixture
def ready(analyst) -> Dataset:
    return imported_dataset(analyst, MESSY_CSV, TEXT_LABEL)


@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_readers_see_the_dataset_without_any_form_that_changes_it(client_as, ready, role):
    client = client_as(role)

    detail = client.get(f"/datasets/{ready.pk}/")
    records = client.get(f"/datasets/{ready.pk}/records/")

    assert (detail.status_code, records.status_code) == (200, 200)
    forms = re.findall(r'<form method="post" action="([^"]+)"', detail.content.decode())
    assert forms == ["/logout/"]
    for control in ("Exclude copies, keep the first", "Create snapshot", "Delete dataset"):
        assertNotContains(detail, control)
    assertContains(detail, 'data-testid="quality-report"')
    if role == "viewer":
        assertContains(detail, "Export CSV")
    else:  # annotators label; taking every record away is not theirs to do
        assertNotContains(detail, "Export CSV")
        export = client.get(f"/datasets/{ready.pk}/export/?format=csv")
        assertContains(export, "Your role (annotator) cannot", status_code=403)


@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_readers_get_403_on_every_post_and_nothing_changes(client_as, ready, role):
    client = client_as(role)
    base = f"/datasets/{ready.pk}"
    before = state()

    for url, data in [
        ("/datasets/upload/", {"file": csv_file()}),
        ("/datasets/demo/", {}),
        (f"{base}/detect/", {"delimiter": ";"}),
        (f"{base}/import/", {"text_columns": ["text"]}),
        (f"{base}/import/cancel/", {}),
        (f"{base}/clean/", {"kind": "drop_exact_duplicates"}),
        (f"{base}/clean/undo/", {}),
        (f"{base}/split/", {"mode": "random"}),
        (f"{base}/snapshots/", {"note": "x"}),
        (f"{base}/delete/", {}),
    ]:
        response = client.post(url, data)
        assert response.status_code == 403, url
        assertContains(response, f"Your role ({role}) cannot", status_code=403)

    assert state() == before


def test_anonymous_visitors_are_sent_to_log_in(client, ready):
    response = client.get(f"/datasets/{ready.pk}/")

    assertRedirects(response, f"/login/?next=/datasets/{ready.pk}/", fetch_redirect_response=False)


def test_deleting_from_the_page_removes_the_dataset(analyst_client, ready):
    response = analyst_client.post(f"/datasets/{ready.pk}/delete/")

    assertRedirects(response, "/datasets/", fetch_redirect_response=False)
    assert not Dataset.objects.exists()
    assert not Record.objects.exists()


def test_labeling_page_counts_records_without_a_label(client_as, analyst):
    dataset = imported_dataset(
        analyst, "text,label\none,a\ntwo,\nthree,b\n", TEXT_LABEL, name="Mixed", report=False
    )

    response = client_as("annotator").get("/datasets/labeling/")

    assert response.status_code == 200
    content = response.content.decode()
    assert f'href="/datasets/{dataset.pk}/records/?label=&amp;flag=included"' in content
    assert ">1</a>" in content


def test_label_chart_names_records_without_a_label(analyst_client, analyst):
    dataset = imported_dataset(analyst, "text,label\na,x\nb,\nc,\n", TEXT_LABEL)

    response = analyst_client.get(f"/datasets/{dataset.pk}/")

    chart = json_script(response, "label-chart-data")
    assert chart == {"labels": ["(no label)", "x"], "values": [2, 1]}
