"""The dataset REST API under /api/v1/: upload and import, reads, cleaning, splits, snapshots,
export, delete, who may do what, and the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.http import content_disposition_header
from rest_framework.test import APIClient

from datasets_app.models import CleaningAction, Dataset, DatasetJob, Record, Snapshot
from datasets_app.services import dataset_import_execute
from tests.datasets_app.factories import imported_dataset, run_queued_jobs, run_queued_reports

API = "/api/v1"
TEXT_LABEL = {"text_columns": ["text"], "label_column": "label"}
CSV = "text,topic,label\nWhere is my card,cards,card\nI lost my PIN,security,pin\nTop up failed,payments,top_up\n"
MESSY_CSV = (
    "text,label\n"
    "Where is my card?,card\n"
    "Where is my card?,card\n"
    "where is my card,card\n"
    ",card\n"
    "I lost my PIN,pin\n"
    "i lost my pin.,pin\n"
    "I lost my PIN,card\n"
    "=1+1 is two,maths\n"
    "How do I top up?,top_up\n"
)
NOTHING_TO_UNDO = "There is no cleaning step to undo."
RATIOS_MESSAGE = "Give three ratios (train, validation, test) that add up to 1."


pytestmark = pytest.mark.usefixtures("redis_broker")


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


@pytest.fixture
def messy(analyst) -> Dataset:
    return imported_dataset(analyst, MESSY_CSV, TEXT_LABEL, name="Banking support")


def csv_file(text: str = CSV, name: str = "banking.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def clean_now(api, dataset: Dataset, kind: str) -> DatasetJob:
    """POST a fix (202, queued), then run its job here as a worker would."""
    response = api.post(f"{API}/datasets/{dataset.pk}/clean/", {"kind": kind}, format="json")
    assert response.status_code == 202, response.json()
    (job,) = run_queued_jobs(dataset)
    assert job.status == "succeeded", job.error_message
    return job


def everything() -> tuple:
    """Every dataset-related row, to show a refused request changed nothing."""
    return (
        list(
            Dataset.objects.order_by("id").values_list(
                "id",
                "name",
                "status",
                "status_message",
                "mapping",
                "detection",
                "record_count",
                "label_counts_base",
                "split_counts",
                "quality_report",
                "active_import_id",
            )
        ),
        list(
            Record.objects.order_by("id").values_list(
                "id", "text", "label", "split", "is_excluded", "original_text", "original_label"
            )
        ),
        list(DatasetJob.objects.order_by("id").values_list("id", "kind", "status")),
        list(Snapshot.objects.order_by("id").values_list("id", "number")),
        list(CleaningAction.objects.order_by("id").values_list("id", "undone_at")),
    )


# --- upload and import -------------------------------------------------------------------------------
def test_upload_with_a_mapping_in_one_call_queues_the_import(api):
    response = api.post(
        f"{API}/datasets/",
        {
            "file": csv_file(),
            "name": "Banking",
            "mapping": json.dumps({"text_columns": ["text"], "label_column": "label"}),
        },
        format="multipart",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["status"], body["source_filename"]) == (
        "Banking",
        "importing",
        "banking.csv",
    )
    assert body["mapping"] == {
        "text_columns": ["text"],
        "text_separator": "\n",
        "label_column": "label",
        "split_column": None,
        "id_column": None,
    }
    assert body["latest_import"]["status"] == "queued"

    dataset_import_execute(job_id=body["latest_import"]["id"])

    detail = api.get(f"{API}/datasets/{body['id']}/").json()
    assert (detail["status"], detail["record_count"]) == ("ready", 3)
    assert detail["label_counts"] == {"card": 1, "pin": 1, "top_up": 1}
    assert detail["latest_import"]["status"] == "succeeded"


def test_upload_then_import_in_two_calls_shows_the_detected_preview_first(api):
    uploaded = api.post(f"{API}/datasets/", {"file": csv_file()}, format="multipart")

    assert uploaded.status_code == 201
    body = uploaded.json()
    assert (body["name"], body["status"], body["latest_import"]) == ("banking", "uploaded", None)
    assert body["detection"]["columns"] == ["text", "topic", "label"]
    assert body["detection"]["preview"] == [
        ["Where is my card", "cards", "card"],
        ["I lost my PIN", "security", "pin"],
        ["Top up failed", "payments", "top_up"],
    ]
    assert (body["detection"]["delimiter"], body["detection"]["has_header"]) == (",", True)
    assert body["mapping"]["text_columns"] == ["text"]  # the suggestion, to confirm or change

    started = api.post(
        f"{API}/datasets/{body['id']}/import/",
        {"text_columns": ["text", "topic"], "text_separator": " / ", "label_column": "label"},
        format="json",
    )

    assert started.status_code == 202
    job = started.json()
    assert (job["kind"], job["status"]) == ("import", "queued")
    dataset_import_execute(job_id=job["id"])
    records = api.get(f"{API}/datasets/{body['id']}/records/").json()["results"]
    assert [(r["source_row"], r["text"], r["label"]) for r in records] == [
        (1, "Where is my card / cards", "card"),
        (2, "I lost my PIN / security", "pin"),
        (3, "Top up failed / payments", "top_up"),
    ]


def test_upload_with_a_mapping_that_is_not_json_is_refused_before_anything_is_stored(api):
    response = api.post(
        f"{API}/datasets/", {"file": csv_file(), "mapping": "{text_columns:"}, format="multipart"
    )

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "errors"}
    assert list(body["errors"]) == ["mapping"]
    assert not Dataset.objects.exists()


def test_import_with_a_column_that_is_not_in_the_file_is_refused_with_the_columns(api, analyst):
    uploaded = api.post(f"{API}/datasets/", {"file": csv_file()}, format="multipart").json()

    response = api.post(
        f"{API}/datasets/{uploaded['id']}/import/",
        {"text_columns": ["body"], "label_column": "label"},
        format="json",
    )

    message = "The text column 'body' is not in the file. Its columns are: text, topic, label."
    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"mapping": [message]}}
    assert not DatasetJob.objects.exists()
    assert Dataset.objects.get().status == "uploaded"


def test_second_import_while_one_is_queued_is_refused(api):
    uploaded = api.post(f"{API}/datasets/", {"file": csv_file()}, format="multipart").json()
    url = f"{API}/datasets/{uploaded['id']}/import/"
    assert api.post(url, TEXT_LABEL, format="json").status_code == 202

    response = api.post(url, TEXT_LABEL, format="json")

    message = "An import of this dataset is already running. Wait for it or cancel it."
    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"non_field_errors": [message]}}
    assert DatasetJob.objects.count() == 1


def test_cancel_stops_a_queued_import(api):
    uploaded = api.post(f"{API}/datasets/", {"file": csv_file()}, format="multipart").json()
    api.post(f"{API}/datasets/{uploaded['id']}/import/", TEXT_LABEL, format="json")

    response = api.post(f"{API}/datasets/{uploaded['id']}/import/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    detail = api.get(f"{API}/datasets/{uploaded['id']}/").json()
    assert (detail["status"], detail["status_message"]) == (
        "failed",
        "The import was cancelled; no records from it were kept.",
    )


def test_demo_endpoint_answers_with_the_dataset_it_is_importing(api):
    response = api.post(f"{API}/datasets/demo/")

    assert response.status_code == 201
    body = response.json()
    assert (body["licence"], body["latest_import"]["status"]) == ("CC BY 4.0", "queued")
    assert body["status"] == "importing"


# --- reads --------------------------------------------------------------------------------------------
def test_detail_has_counts_label_distribution_and_the_quality_report(api, messy):
    response = api.get(f"{API}/datasets/{messy.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["record_count"]) == ("ready", 9)
    assert body["label_counts"] == {"card": 5, "pin": 2, "maths": 1, "top_up": 1}
    assert body["split_counts"] == {"": 9}
    assert {f["kind"]: f["count"] for f in body["quality_report"]["findings"]} == {
        "empty": 1,
        "exact_duplicate": 1,
        "near_duplicate": 2,
        "label_conflict": 3,
        "small_class": 9,
    }
    assert body["quality_report"]["stats"]["total"] == 9
    listed = api.get(f"{API}/datasets/").json()
    assert [d["id"] for d in listed] == [messy.pk]
    assert "quality_report" not in listed[0]


def test_records_are_paged_with_next_after_until_every_record_was_seen(api, messy):
    url = f"{API}/datasets/{messy.pk}/records/"
    seen, after, pages = [], None, 0
    while True:
        params = {"page_size": 4, **({"after": after} if after else {})}
        body = api.get(url, params).json()
        pages += 1
        seen += [r["source_row"] for r in body["results"]]
        after = body["next_after"]
        if after is None:
            break
        assert after == body["results"][-1]["id"]

    assert seen == list(range(1, 10))
    assert pages == 3


@pytest.mark.parametrize(
    ("params", "rows"),
    [
        ({"label": "pin"}, [5, 6]),
        ({"split": ""}, list(range(1, 10))),
        ({"split": "train"}, []),
        ({"flag": "empty"}, [4]),
        ({"search": "card"}, [1, 2, 3]),
        ({"label": "card", "search": "PIN"}, [7]),
    ],
)
def test_records_can_be_filtered(api, messy, params, rows):
    response = api.get(f"{API}/datasets/{messy.pk}/records/", params)

    assert response.status_code == 200
    assert [r["source_row"] for r in response.json()["results"]] == rows


def test_records_say_whether_a_search_used_the_word_index(api, messy):
    from tests.datasets_app.factories import run_queued_search_index

    url = f"{API}/datasets/{messy.pk}/records/"
    assert api.get(url).json()["search_mode"] == ""
    assert api.get(url, {"search": "card"}).json()["search_mode"] == "substring"
    run_queued_search_index(messy)
    # On SQLite (FTS5) as on PostgreSQL.
    assert api.get(url, {"search": "card"}).json()["search_mode"] == "full_text"


def test_records_show_what_cleaning_changed(api, messy):
    clean_now(api, messy, "drop_exact_duplicates")

    body = api.get(f"{API}/datasets/{messy.pk}/records/", {"flag": "excluded"}).json()

    first = Record.objects.get(dataset=messy, source_row=1)
    assert body["next_after"] is None
    assert [
        {k: r[k] for k in ("source_row", "is_excluded", "exclusion_reason", "original_text")}
        for r in body["results"]
    ] == [
        {
            "source_row": 2,
            "is_excluded": True,
            "exclusion_reason": f"Copy of record {first.pk} (same text and label).",
            "original_text": None,
        }
    ]


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ("abc", "'after' must be a whole number (a record id)."),
        ("1.5", "'after' must be a whole number (a record id)."),
        ("-1", "'after' is out of range."),
        ("1" * 25, "'after' is out of range."),
        (str(2**63), "'after' is out of range."),
    ],
)
def test_bad_after_values_get_400_json_not_500(api, messy, after, message):
    response = api.get(f"{API}/datasets/{messy.pk}/records/", {"after": after})

    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"after": [message]}}


def test_a_page_size_that_is_not_a_number_gets_400_naming_it(api, messy):
    response = api.get(f"{API}/datasets/{messy.pk}/records/", {"page_size": "lots"})

    assert response.status_code == 400
    message = "'page_size' must be a whole number from 1 to 500."
    assert response.json() == {"detail": message, "errors": {"page_size": [message]}}


@pytest.mark.parametrize(
    ("params", "field"),
    [({"flag": "mojibak"}, "flag"), ({"split": "dev"}, "split"), ({"split": "Train"}, "split")],
)
def test_an_unknown_flag_or_split_gets_400_naming_it(api, messy, params, field):
    """An unknown flag used to list every record and an unknown split none, both as a 200."""
    response = api.get(f"{API}/datasets/{messy.pk}/records/", params)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert response.json()["detail"].startswith("Unknown ")


def test_a_dataset_id_too_long_for_the_database_is_404_json(api, messy):
    response = api.get(f"{API}/datasets/{'9' * 25}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}


def test_an_unknown_dataset_is_404_json(api, messy):
    response = api.get(f"{API}/datasets/{messy.pk + 1000}/records/")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "This dataset does not exist or was deleted.",
        "errors": {},
    }


# --- cleaning, splits, snapshots ------------------------------------------------------------------------
def test_clean_then_undo_through_the_api(api, messy):
    url = f"{API}/datasets/{messy.pk}"

    started = api.post(f"{url}/clean/", {"kind": "drop_exact_duplicates"}, format="json")

    assert started.status_code == 202
    assert {k: started.json()[k] for k in ("kind", "status", "progress")} == {
        "kind": "clean",
        "status": "queued",
        "progress": 0,
    }
    assert api.get(f"{url}/").json()["latest_jobs"]["clean"]["status"] == "queued"
    run_queued_jobs(messy)
    cleaned = api.get(f"{url}/").json()
    assert cleaned["latest_jobs"]["clean"]["status"] == "succeeded"
    assert cleaned["latest_jobs"]["clean"]["message"] == "Excluded 1 exact copy."
    assert (cleaned["record_count"], cleaned["label_counts"]["card"]) == (8, 4)
    assert Record.objects.filter(dataset=messy).count() == 9

    undone = api.post(f"{url}/clean/undo/")

    assert undone.status_code == 200
    assert (undone.json()["record_count"], undone.json()["label_counts"]["card"]) == (9, 5)
    again = api.post(f"{url}/clean/undo/")
    assert again.status_code == 400
    assert again.json() == {
        "detail": NOTHING_TO_UNDO,
        "errors": {"non_field_errors": [NOTHING_TO_UNDO]},
    }


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        (
            {"kind": "delete_everything"},
            {
                "kind": [
                    "Unknown fix 'delete_everything'. Choose one of: drop_exact_duplicates, "
                    "drop_near_duplicates, drop_empty, resolve_conflicts_majority, "
                    "resolve_conflicts_drop, repair_mojibake, strip_markup, "
                    "exclude_length_outliers, exclude_small_classes, exclude_mostly_noise."
                ]
            },
        ),
        ({}, {"kind": ["This field is required."]}),
    ],
)
def test_clean_with_a_bad_kind_is_refused_and_changes_nothing(api, messy, data, errors):
    before = everything()

    response = api.post(f"{API}/datasets/{messy.pk}/clean/", data, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": next(iter(errors.values()))[0], "errors": errors}
    assert everything() == before


def test_split_assigns_stratified_splits(api, messy):
    response = api.post(
        f"{API}/datasets/{messy.pk}/split/",
        {"mode": "random", "ratios": [0.6, 0.2, 0.2], "seed": 5},
        format="json",
    )

    assert response.status_code == 202
    assert (response.json()["kind"], response.json()["status"]) == ("split", "queued")
    (job,) = run_queued_jobs(messy)
    detail = api.get(f"{API}/datasets/{messy.pk}/").json()
    assert detail["latest_jobs"]["split"]["id"] == response.json()["id"] == job.pk
    assert detail["latest_jobs"]["split"]["status"] == "succeeded"
    counts = detail["split_counts"]
    said = ", ".join(f"{counts[s]} {s}" for s in ("train", "validation", "test") if s in counts)
    assert detail["latest_jobs"]["split"]["message"] == f"Assigned {said}."
    assert sum(counts.values()) == 9
    assert counts["train"] >= 5
    stored = {
        split: Record.objects.filter(dataset=messy, split=split).count()
        for split in ("test", "train", "validation")
    }
    assert counts == {split: n for split, n in stored.items() if n}
    assert not Record.objects.filter(dataset=messy, split="").exists()


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"ratios": [0.5, 0.3, 0.1]}, {"ratios": [RATIOS_MESSAGE]}),
        ({"ratios": [0.5, 0.5]}, {"ratios": ["Ensure this field has at least 3 elements."]}),
        (
            {"mode": "file"},
            {"mode": ["The file had no split column mapped. Choose a random split."]},
        ),
        ({"mode": "alphabetical"}, {"mode": ['"alphabetical" is not a valid choice.']}),
    ],
)
def test_split_with_bad_input_is_refused_and_changes_nothing(api, messy, data, errors):
    before = everything()

    response = api.post(f"{API}/datasets/{messy.pk}/split/", data, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": next(iter(errors.values()))[0], "errors": errors}
    assert everything() == before


def test_split_of_a_dataset_whose_records_are_all_excluded_is_refused_at_once(api, messy):
    Record.objects.filter(dataset=messy).update(is_excluded=True)
    before = everything()

    response = api.post(f"{API}/datasets/{messy.pk}/split/", {}, format="json")

    message = "All records are excluded; there is nothing to split."
    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"non_field_errors": [message]}}
    assert everything() == before


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            "split",
            "clean",
            "Splits of this dataset are being assigned. Wait for that to finish, then try again.",
        ),
        (
            "clean",
            "split",
            "A cleaning fix is being applied to this dataset. Wait for it to finish, then try "
            "again.",
        ),
        (
            "clean",
            "clean",
            "A cleaning fix is being applied to this dataset. Wait for it to finish, then try "
            "again.",
        ),
    ],
)
def test_a_split_or_fix_is_refused_while_another_is_queued(api, messy, first, second, message):
    bodies = {"split": {"mode": "random"}, "clean": {"kind": "drop_exact_duplicates"}}
    assert (
        api.post(f"{API}/datasets/{messy.pk}/{first}/", bodies[first], format="json").status_code
        == 202
    )
    before = everything()

    response = api.post(f"{API}/datasets/{messy.pk}/{second}/", bodies[second], format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"non_field_errors": [message]}}
    assert everything() == before
    run_queued_jobs(messy)
    after = api.post(f"{API}/datasets/{messy.pk}/{second}/", bodies[second], format="json")
    assert after.status_code == 202


def test_snapshots_are_created_numbered_listed_and_read(api, messy):
    url = f"{API}/datasets/{messy.pk}/snapshots/"

    first = api.post(url, {"note": "before cleaning"}, format="json")
    clean_now(api, messy, "drop_empty")
    second = api.post(url, {}, format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert (first.json()["number"], first.json()["record_count"], first.json()["note"]) == (
        1,
        9,
        "before cleaning",
    )
    assert (second.json()["number"], second.json()["record_count"]) == (2, 8)
    listed = api.get(url).json()
    assert [(s["number"], s["record_count"]) for s in listed] == [(2, 8), (1, 9)]
    one = api.get(f"{API}/snapshots/{first.json()['id']}/")
    assert one.status_code == 200
    assert one.json() == first.json()


def test_snapshot_of_a_dataset_without_records_is_refused(api):
    uploaded = api.post(f"{API}/datasets/", {"file": csv_file()}, format="multipart").json()

    response = api.post(f"{API}/datasets/{uploaded['id']}/snapshots/", {}, format="json")

    message = "This dataset has no imported records to snapshot yet."
    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"non_field_errors": [message]}}
    assert not Snapshot.objects.exists()


# --- export ----------------------------------------------------------------------------------------------
def content(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_export_current_records_as_csv_with_formula_cells_escaped(api, messy):
    clean_now(api, messy, "drop_exact_duplicates")

    response = api.get(f"{API}/datasets/{messy.pk}/export/")  # CSV unless asked otherwise

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="Banking_support-current.csv"'
    assert content(response) == (
        "source_row,text,label,split\r\n"
        "1,Where is my card?,card,\r\n"
        "3,where is my card,card,\r\n"
        "4,,card,\r\n"
        "5,I lost my PIN,pin,\r\n"
        "6,i lost my pin.,pin,\r\n"
        "7,I lost my PIN,card,\r\n"
        "8,'=1+1 is two,maths,\r\n"
        "9,How do I top up?,top_up,\r\n"
    )


def test_export_jsonl_keeps_texts_exactly(api, messy):
    response = api.get(f"{API}/datasets/{messy.pk}/export/", {"format": "jsonl"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    lines = [json.loads(line) for line in content(response).splitlines()]
    assert len(lines) == 9
    assert lines[7] == {"source_row": 8, "text": "=1+1 is two", "label": "maths", "split": ""}


def test_export_with_an_explicit_csv_format_is_the_csv(api, messy):
    response = api.get(f"{API}/datasets/{messy.pk}/export/", {"format": "csv"})

    assert response.status_code == 200
    assert content(response).startswith("source_row,text,label,split\r\n")


def test_export_in_an_unknown_format_gets_400_json(api, messy):
    response = api.get(f"{API}/datasets/{messy.pk}/export/", {"format": "xlsx"})

    message = "Choose format=csv or format=jsonl."
    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {"format": [message]}}


def test_export_of_a_snapshot_is_that_version_not_the_current_one(api, messy):
    snapshot = api.post(f"{API}/datasets/{messy.pk}/snapshots/", {}, format="json").json()
    clean_now(api, messy, "resolve_conflicts_drop")

    frozen = api.get(f"{API}/datasets/{messy.pk}/export/", {"snapshot": snapshot["id"]})
    current = api.get(f"{API}/datasets/{messy.pk}/export/")

    def rows(response) -> list[str]:
        return [line.split(",")[0] for line in content(response).splitlines()[1:]]

    assert frozen["Content-Disposition"] == 'attachment; filename="Banking_support-v1.csv"'
    assert rows(frozen) == [str(n) for n in range(1, 10)]
    assert rows(current) == ["1", "2", "3", "4", "8", "9"]


def test_export_of_a_dataset_with_a_non_ascii_name_names_the_file_in_utf8(api, analyst):
    dataset = imported_dataset(analyst, CSV, TEXT_LABEL, name="数据集", report=False)

    response = api.get(f"{API}/datasets/{dataset.pk}/export/")

    assert response["Content-Disposition"] == content_disposition_header(
        as_attachment=True, filename="数据集-current.csv"
    )


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"snapshot": "abc"}, {"snapshot": ["This dataset has no such snapshot."]}),
        ({"snapshot": "9" * 25}, {"snapshot": ["This dataset has no such snapshot."]}),
        ({"snapshot": "-3"}, {"snapshot": ["This dataset has no such snapshot."]}),
    ],
)
def test_export_with_bad_parameters_gets_400_json(api, messy, params, errors):
    response = api.get(f"{API}/datasets/{messy.pk}/export/", params)

    assert response.status_code == 400
    assert response.json() == {"detail": next(iter(errors.values()))[0], "errors": errors}


def test_export_of_another_datasets_snapshot_is_refused(api, messy, analyst):
    other = imported_dataset(analyst, CSV, TEXT_LABEL, report=False)
    snapshot = api.post(f"{API}/datasets/{other.pk}/snapshots/", {}, format="json").json()

    response = api.get(f"{API}/datasets/{messy.pk}/export/", {"snapshot": snapshot["id"]})

    assert response.status_code == 400
    assert response.json()["errors"] == {"snapshot": ["This dataset has no such snapshot."]}


# --- delete ------------------------------------------------------------------------------------------------
def test_delete_removes_the_dataset_its_records_snapshots_and_file(
    api, messy, django_capture_on_commit_callbacks
):
    api.post(f"{API}/datasets/{messy.pk}/snapshots/", {}, format="json")
    storage, name = messy.source_file.storage, messy.source_file.name
    assert storage.exists(name)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"{API}/datasets/{messy.pk}/")

    assert response.status_code == 204
    assert not Dataset.objects.exists()
    assert not Record.objects.exists()
    assert not DatasetJob.objects.exists()
    assert not Snapshot.objects.exists()
    assert not storage.exists(name)
    assert api.get(f"{API}/datasets/{messy.pk}/").status_code == 404


# --- who may do what -------------------------------------------------------------------------------------
def readable_urls(dataset: Dataset, snapshot: Snapshot) -> list[str]:
    base = f"{API}/datasets/{dataset.pk}"
    return [
        f"{API}/datasets/",
        f"{base}/",
        f"{base}/records/",
        f"{base}/records/?label=card&after=1",
        f"{base}/snapshots/",
        f"{API}/snapshots/{snapshot.pk}/",
        f"{base}/export/",
        f"{base}/export/?snapshot={snapshot.pk}",
    ]


def writes(dataset: Dataset) -> list[tuple[str, str, dict, str]]:
    """(method, url, data, action) for every endpoint that changes something."""
    base = f"{API}/datasets/{dataset.pk}"
    return [
        ("post", f"{API}/datasets/", {"file": csv_file()}, "create"),
        ("post", f"{API}/datasets/demo/", {}, "create"),
        ("post", f"{base}/detect/", {"delimiter": ";"}, "change"),
        ("post", f"{base}/import/", {"text_columns": ["text"]}, "change"),
        ("post", f"{base}/import/cancel/", {}, "change"),
        ("post", f"{base}/clean/", {"kind": "drop_exact_duplicates"}, "change"),
        ("post", f"{base}/clean/undo/", {}, "change"),
        ("post", f"{base}/split/", {"mode": "random"}, "change"),
        ("post", f"{base}/snapshots/", {"note": "mine"}, "change"),
        ("delete", f"{base}/", {}, "delete"),
    ]


@pytest.fixture
def shared(messy, analyst) -> tuple[Dataset, Snapshot]:
    """A dataset with a snapshot and one cleaning step, as an analyst left it."""
    from datasets_app.services import dataset_clean_apply, snapshot_create

    snapshot = snapshot_create(dataset=messy, user=analyst)
    dataset_clean_apply(dataset=messy, user=analyst, kind="drop_empty")
    run_queued_reports(messy)
    messy.refresh_from_db()
    return messy, snapshot


@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_readers_can_read_everything(api_client_as, shared, role):
    dataset, snapshot = shared
    client = api_client_as(role)

    for url in readable_urls(dataset, snapshot):
        response = client.get(url)
        if role == "annotator" and "/export/" in url:
            # Annotators label the records they are shown; exporting them all is not theirs.
            assert response.status_code == 403, url
            assert "Your role (annotator) cannot" in response.json()["detail"], url
        else:
            assert response.status_code == 200, url


@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_readers_get_403_with_a_reason_for_every_write_and_nothing_changes(
    api_client_as, shared, role
):
    dataset, _ = shared
    client = api_client_as(role)
    before = everything()

    for method, url, data, action in writes(dataset):
        response = getattr(client, method)(
            url, data, format="multipart" if "file" in data else "json"
        )
        assert response.status_code == 403, (method, url)
        assert response.json() == {
            "detail": f"Your role ({role}) cannot {action} datasets here. Ask an admin for one "
            "of these roles: admin, analyst.",
            "errors": {},
        }, (method, url)

    assert everything() == before


@pytest.mark.parametrize("role", ["admin", "analyst"])
def test_builders_may_write(api_client_as, shared, role):
    dataset, _ = shared
    client = api_client_as(role)

    response = client.post(f"{API}/datasets/{dataset.pk}/snapshots/", {}, format="json")

    assert response.status_code == 201
    assert client.delete(f"{API}/datasets/{dataset.pk}/").status_code == 204


def test_anonymous_requests_are_refused_and_change_nothing(shared):
    dataset, snapshot = shared
    client = APIClient()
    before = everything()

    for url in readable_urls(dataset, snapshot):
        response = client.get(url)
        assert response.status_code in (401, 403), url
        assert response.json() == {
            "detail": "Authentication credentials were not provided.",
            "errors": {},
        }
    for method, url, data, _ in writes(dataset):
        response = getattr(client, method)(
            url, data, format="multipart" if "file" in data else "json"
        )
        assert response.status_code in (401, 403), (method, url)

    assert everything() == before


# --- schema ----------------------------------------------------------------------------------------------
def test_openapi_schema_lists_the_dataset_endpoints(client_as):
    client = client_as("viewer")

    response = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})

    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path, methods in {
        "/api/v1/datasets/": {"get", "post"},
        "/api/v1/datasets/demo/": {"post"},
        "/api/v1/datasets/{dataset_id}/": {"get", "delete"},
        "/api/v1/datasets/{dataset_id}/detect/": {"post"},
        "/api/v1/datasets/{dataset_id}/import/": {"post"},
        "/api/v1/datasets/{dataset_id}/import/cancel/": {"post"},
        "/api/v1/datasets/{dataset_id}/records/": {"get"},
        "/api/v1/datasets/{dataset_id}/clean/": {"post"},
        "/api/v1/datasets/{dataset_id}/clean/undo/": {"post"},
        "/api/v1/datasets/{dataset_id}/split/": {"post"},
        "/api/v1/datasets/{dataset_id}/snapshots/": {"get", "post"},
        "/api/v1/datasets/{dataset_id}/export/": {"get"},
        "/api/v1/snapshots/{snapshot_id}/": {"get"},
    }.items():
        assert path in paths
        assert set(paths[path]) - {"parameters"} == methods, path
    schemas = json.loads(response.content)["components"]["schemas"]
    for path in ("/api/v1/datasets/{dataset_id}/split/", "/api/v1/datasets/{dataset_id}/clean/"):
        answers = paths[path]["post"]["responses"]
        # 401-404 and 503 are documented on every operation (the one error shape).
        assert set(answers) == {"202", "400", "401", "403", "404", "503"}, path
        assert answers["400"]["description"] == "Refused."
        job_schema = answers["202"]["content"]["application/json"]["schema"]
        assert job_schema == {"$ref": "#/components/schemas/DatasetJob"}
        assert "background job" in paths[path]["post"]["summary"]
    detail = schemas["DatasetDetail"]["properties"]["latest_jobs"]
    latest = schemas[detail["allOf"][0]["$ref"].split("/")[-1]] if "allOf" in detail else detail
    latest = schemas[latest["$ref"].split("/")[-1]] if "$ref" in latest else latest
    assert {"import", "report", "search_index", "split", "clean"} <= set(latest["properties"])
    records = paths["/api/v1/datasets/{dataset_id}/records/"]["get"]
    assert {"after", "label", "split", "flag", "search", "page_size"} <= {
        p["name"] for p in records["parameters"]
    }


def test_openapi_schema_needs_a_login(client):
    response = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})

    assert response.status_code in (401, 403)


def test_upload_with_a_mapping_naming_a_missing_column_keeps_the_file_and_says_why(api):
    upload = SimpleUploadedFile("d.csv", b"text,label\nhello,a\nworld,b\n", content_type="text/csv")

    response = api.post(
        f"{API}/datasets/",
        {"file": upload, "mapping": '{"text_columns": ["body"]}'},
        format="multipart",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["import_errors"] == {
        "mapping": ["The text column 'body' is not in the file. Its columns are: text, label."]
    }
    assert Dataset.objects.get(pk=body["id"]).status == "uploaded"
    assert not Record.objects.exists()
