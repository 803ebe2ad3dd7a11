"""Exports keep everything the file had (the mapped id column and the other columns as
metadata), and the OpenAPI schema describes the record page and the export as they are."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rest_framework.test import APIClient

from datasets_app.selectors import export_stream
from datasets_app.services import snapshot_create
from tests.datasets_app.factories import import_now, imported_dataset

API = "/api/v1"
# "ref" is the id column; "label" is not mapped (the label is "intent"), so it is metadata
# that would repeat the label column's name in CSV.
WIDE_CSV = "ref,text,intent,label,lang\n=r1,Hello there,greet,old,en\nr2,Bye now,bye,=2+2,@fr\n"
WIDE_MAPPING = {"text_columns": ["text"], "label_column": "intent", "id_column": "ref"}


pytestmark = pytest.mark.usefixtures("redis_broker")


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def jsonl_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.split("\n") if line]


def test_csv_export_has_the_id_column_and_one_escaped_column_per_metadata_key(analyst):
    dataset = imported_dataset(analyst, WIDE_CSV, WIDE_MAPPING, report=False)

    exported = "".join(export_stream(dataset=dataset, fmt="csv"))

    assert csv_rows(exported) == [
        ["source_row", "text", "label", "split", "id", "metadata.label", "lang"],
        ["1", "Hello there", "greet", "", "'=r1", "old", "en"],
        ["2", "Bye now", "bye", "", "r2", "'=2+2", "'@fr"],
    ]


def test_csv_export_escapes_metadata_column_names_a_spreadsheet_would_run(analyst):
    text = 'text,intent,=HYPERLINK("http://evil.example"),@cmd\nHello,greet,a,b\n'
    mapping = {"text_columns": ["text"], "label_column": "intent"}
    dataset = imported_dataset(analyst, text, mapping, report=False)

    exported = "".join(export_stream(dataset=dataset, fmt="csv"))

    assert csv_rows(exported)[0] == [
        "source_row",
        "text",
        "label",
        "split",
        '\'=HYPERLINK("http://evil.example")',
        "'@cmd",
    ]


def test_jsonl_export_has_the_id_and_a_metadata_object_kept_exactly(analyst):
    dataset = imported_dataset(analyst, WIDE_CSV, WIDE_MAPPING, report=False)

    exported = "".join(export_stream(dataset=dataset, fmt="jsonl"))

    assert jsonl_rows(exported) == [
        {
            "source_row": 1,
            "text": "Hello there",
            "label": "greet",
            "split": "",
            "id": "=r1",
            "metadata": {"label": "old", "lang": "en"},
        },
        {
            "source_row": 2,
            "text": "Bye now",
            "label": "bye",
            "split": "",
            "id": "r2",
            "metadata": {"label": "=2+2", "lang": "@fr"},
        },
    ]


def test_export_without_an_id_column_has_metadata_but_no_id(analyst):
    dataset = imported_dataset(
        analyst,
        "lang,text,label\nen,Hello,greet\nde,Hallo,greet\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )

    assert csv_rows("".join(export_stream(dataset=dataset, fmt="csv"))) == [
        ["source_row", "text", "label", "split", "lang"],
        ["1", "Hello", "greet", "", "en"],
        ["2", "Hallo", "greet", "", "de"],
    ]
    assert [
        set(row) for row in jsonl_rows("".join(export_stream(dataset=dataset, fmt="jsonl")))
    ] == [{"source_row", "text", "label", "split", "metadata"}] * 2


def test_csv_export_writes_json_values_of_a_json_lines_file_as_json(analyst):
    lines = [
        {"text": "a", "label": "x", "score": 0.5, "tags": ["p", "q"], "note": None},
        {"text": "b", "label": "y", "score": 1.5, "tags": [], "note": "-minus"},
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines)
    dataset = imported_dataset(
        analyst,
        content,
        {"text_columns": ["text"], "label_column": "label"},
        filename="data.jsonl",
        report=False,
    )

    table = csv_rows("".join(export_stream(dataset=dataset, fmt="csv")))

    assert table[0] == ["source_row", "text", "label", "split", "score", "tags", "note"]
    assert table[1:] == [
        ["1", "a", "x", "", "0.5", '["p", "q"]', ""],
        ["2", "b", "y", "", "1.5", "[]", "'-minus"],
    ]
    exported = jsonl_rows("".join(export_stream(dataset=dataset, fmt="jsonl")))
    assert [row["metadata"] for row in exported] == [
        {"score": 0.5, "tags": ["p", "q"], "note": None},
        {"score": 1.5, "tags": [], "note": "-minus"},
    ]


def test_snapshot_export_has_id_and_metadata_until_a_later_import_replaces_its_records(analyst):
    dataset = imported_dataset(analyst, WIDE_CSV, WIDE_MAPPING, report=False)
    snapshot = snapshot_create(dataset=dataset, user=analyst)

    assert csv_rows("".join(export_stream(snapshot=snapshot, fmt="csv"))) == [
        ["source_row", "text", "label", "split", "id", "metadata.label", "lang"],
        ["1", "Hello there", "greet", "", "'=r1", "old", "en"],
        ["2", "Bye now", "bye", "", "r2", "'=2+2", "'@fr"],
    ]
    assert jsonl_rows("".join(export_stream(snapshot=snapshot, fmt="jsonl")))[1] == {
        "source_row": 2,
        "text": "Bye now",
        "label": "bye",
        "split": "",
        "id": "r2",
        "metadata": {"label": "=2+2", "lang": "@fr"},
    }

    job = import_now(dataset, analyst, {"text_columns": ["text"], "label_column": "label"})
    assert job.status == "succeeded", job.error_message

    # The snapshot keeps its text, label and split; the replaced records took id and metadata.
    assert csv_rows("".join(export_stream(snapshot=snapshot, fmt="csv"))) == [
        ["source_row", "text", "label", "split"],
        ["1", "Hello there", "greet", ""],
        ["2", "Bye now", "bye", ""],
    ]
    dataset.refresh_from_db()
    assert csv_rows("".join(export_stream(dataset=dataset, fmt="csv")))[0] == [
        "source_row",
        "text",
        "label",
        "split",
        "ref",
        "intent",
        "lang",
    ]


def test_api_export_streams_the_extra_columns(analyst):
    dataset = imported_dataset(analyst, WIDE_CSV, WIDE_MAPPING, report=False)
    api = APIClient()
    api.force_authenticate(analyst)

    response = api.get(f"{API}/datasets/{dataset.pk}/export/", {"format": "jsonl"})

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    body = b"".join(response.streaming_content).decode()
    assert jsonl_rows(body)[0]["id"] == "=r1"
    assert jsonl_rows(body)[0]["metadata"] == {"label": "old", "lang": "en"}


# --- schema ----------------------------------------------------------------------------------
def openapi(client) -> dict:
    response = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    return json.loads(response.content)


def resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    if ref is None:
        return node
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def test_schema_documents_the_record_page_object_not_a_list(client_as):
    schema = openapi(client_as("viewer"))

    ok = schema["paths"]["/api/v1/datasets/{dataset_id}/records/"]["get"]["responses"]["200"]
    page = resolve(schema, ok["content"]["application/json"]["schema"])

    assert page["type"] == "object"
    assert set(page["properties"]) == {"results", "next_after", "search_mode", "search_note"}
    assert set(page["required"]) == {"results", "next_after", "search_mode", "search_note"}
    results = page["properties"]["results"]
    assert results["type"] == "array"
    record = resolve(schema, results["items"])
    assert {"id", "source_row", "text", "label", "split", "external_id", "metadata"} <= set(
        record["properties"]
    )
    assert page["properties"]["next_after"] == {
        "type": "integer",
        "nullable": True,
        "description": "Pass as 'after' for the next page; null on the last page.",
    }
    modes = [resolve(schema, option) for option in page["properties"]["search_mode"]["oneOf"]]
    assert {value for option in modes for value in option["enum"]} == {"", "full_text", "substring"}


def test_schema_documents_both_export_media_types_and_the_extra_columns(client_as):
    schema = openapi(client_as("viewer"))

    export = schema["paths"]["/api/v1/datasets/{dataset_id}/export/"]["get"]

    assert set(export["responses"]["200"]["content"]) == {"text/csv", "application/x-ndjson"}
    for media in export["responses"]["200"]["content"].values():
        assert media["schema"] == {"type": "string"}
    params = {p["name"]: p for p in export["parameters"]}
    assert params["format"]["schema"]["enum"] == ["csv", "jsonl"]
    assert "`metadata`" in export["description"]
    assert "`id`" in export["description"]
    assert "snapshot" in export["description"]
