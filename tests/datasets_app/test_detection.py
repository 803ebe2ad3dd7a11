"""Reading the file again with the user's settings, from the page and the API.

Detection itself is tested in test_csv_io.py; these tests go through what users touch: the
"How to read the file" form, the "Read as" line, /api/v1/datasets/{id}/detect/, and the
mapping form's separator.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape
from pytest_django.asserts import assertContains, assertRedirects
from rest_framework.test import APIClient

from datasets_app.models import Dataset, DatasetJob, Record
from datasets_app.services import dataset_detect, dataset_upload
from tests.datasets_app.factories import import_now

# Polish, Windows-1250, semicolons, and commas inside the first column. Detection reads it as
# cp1252 (every byte decodes) split at commas (both split every line in two): plausible,
# wrong, and only the user can tell.
POLISH = "Nazwisko, imię;Komentarz\nKowalski, Jan;Zażółć gęślą jaźń\nNowak, Anna;Świetna obsługa\n"
POLISH_ROWS = [["Kowalski, Jan", "Zażółć gęślą jaźń"], ["Nowak, Anna", "Świetna obsługa"]]
NOT_A_FILE_ENCODING = (
    "is not an encoding text files are written in. Choose one such as utf-8, cp1252 or latin-1."
)


pytestmark = pytest.mark.usefixtures("redis_broker")


@pytest.fixture
def api(analyst) -> APIClient:
    client = APIClient()
    client.force_authenticate(analyst)
    return client


@pytest.fixture
def polish(analyst) -> Dataset:
    file = SimpleUploadedFile("klienci.csv", POLISH.encode("cp1250"), content_type="text/csv")
    dataset = dataset_upload(user=analyst, file=file)
    assert (dataset.detection["encoding"], dataset.detection["delimiter"]) == ("cp1252", ",")
    return dataset


# --- the page ----------------------------------------------------------------------------------
def test_page_override_of_encoding_and_delimiter_changes_what_is_read(
    analyst_client, analyst, polish
):
    response = analyst_client.post(
        f"/datasets/{polish.pk}/detect/",
        {"encoding": "cp1250", "delimiter": ";", "quoting": "", "header": ""},
    )

    assertRedirects(response, f"/datasets/{polish.pk}/", fetch_redirect_response=False)
    polish.refresh_from_db()
    assert polish.status == Dataset.Status.UPLOADED
    assert polish.detection["encoding"] == "cp1250"
    assert polish.detection["delimiter"] == ";"
    assert polish.detection["columns"] == ["Nazwisko, imię", "Komentarz"]
    assert polish.detection["preview"] == POLISH_ROWS
    page = analyst_client.get(f"/datasets/{polish.pk}/")
    assertContains(page, "The file was read again with your settings.")
    assertContains(
        page,
        '<dd data-testid="read-as">delimited text, delimiter <code>;</code>, double quotes, '
        "with header, encoding Windows-1250 (Central European), about 2 rows</dd>",
        html=True,
    )
    job = import_now(polish, analyst, {"text_columns": ["Komentarz"], "label_column": None})
    assert job.status == "succeeded", job.error_message
    assert list(Record.objects.order_by("source_row").values_list("text", "metadata")) == [
        ("Zażółć gęślą jaźń", {"Nazwisko, imię": "Kowalski, Jan"}),
        ("Świetna obsługa", {"Nazwisko, imię": "Nowak, Anna"}),
    ]


def test_read_as_line_shows_quoting_missing_header_and_the_estimate(analyst_client, analyst):
    data = b"'1';'Hello; world';'greeting'\n'2';'Bye';'farewell'\n'3';'Hi';'greeting'\n"
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("a.csv", data))

    page = analyst_client.get(f"/datasets/{dataset.pk}/")

    assertContains(
        page,
        '<dd data-testid="read-as">delimited text, delimiter <code>;</code>, single quotes, '
        "without header, encoding UTF-8, about 3 rows</dd>",
        html=True,
    )
    assert dataset.detection["preview"][0] == ["1", "Hello; world", "greeting"]


def test_page_header_override_reads_the_first_row_as_a_record(analyst_client, analyst):
    data = b"text,label\nhello there,greeting\nbye now,farewell\n"
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("a.csv", data))
    assert dataset.detection["has_header"] is True

    analyst_client.post(f"/datasets/{dataset.pk}/detect/", {"header": "no"})

    dataset.refresh_from_db()
    assert dataset.detection["has_header"] is False
    assert dataset.detection["columns"] == ["column_1", "column_2"]
    assert dataset.detection["preview"][0] == ["text", "label"]
    assert dataset.detection["estimated_rows"] == 3
    assert dataset.mapping["text_columns"] == ["column_1"]


@pytest.mark.parametrize(
    ("posted", "field", "message"),
    [
        pytest.param({"encoding": "hex"}, "encoding", f"'hex' {NOT_A_FILE_ENCODING}", id="hex"),
        pytest.param(
            {"encoding": "rot13"}, "encoding", f"'rot13' {NOT_A_FILE_ENCODING}", id="rot13"
        ),
        pytest.param(
            {"encoding": "klingon-8"},
            "encoding",
            "'klingon-8' is not a text encoding Python knows.",
            id="unknown",
        ),
    ],
)
def test_page_override_no_file_can_be_read_with_is_shown_at_its_field(
    analyst_client, polish, posted, field, message
):
    before = polish.detection

    response = analyst_client.post(f"/datasets/{polish.pk}/detect/", posted)

    assert response.status_code == 400
    assert response.context["detect_form"].errors == {field: [message]}
    assertContains(response, f'<span class="field-error">{escape(message)}</span>', status_code=400)
    assertContains(response, f'value="{posted["encoding"]}"', status_code=400)  # kept
    polish.refresh_from_db()
    assert (polish.status, polish.detection) == (Dataset.Status.UPLOADED, before)


def test_page_says_what_failed_when_the_file_cannot_be_read_with_the_settings(
    analyst_client, polish
):
    response = analyst_client.post(f"/datasets/{polish.pk}/detect/", {"encoding": "utf-8"})

    assertRedirects(response, f"/datasets/{polish.pk}/", fetch_redirect_response=False)
    polish.refresh_from_db()
    message = (
        "Line 1 has bytes that are not valid utf-8 (byte 0xea). Choose the file's real "
        "encoding (for Excel exports often cp1252) and retry."
    )
    assert (polish.status, polish.status_message, polish.detection) == (
        Dataset.Status.FAILED,
        message,
        {},
    )
    page = analyst_client.get(f"/datasets/{polish.pk}/")
    assertContains(page, escape(f"The file could not be read: {message}"))
    assert "The file was read again with your settings." not in page.content.decode()


# --- the API -----------------------------------------------------------------------------------
def test_api_override_changes_what_is_read(api, polish):
    response = api.post(
        f"/api/v1/datasets/{polish.pk}/detect/",
        {"encoding": "cp1250", "delimiter": ";", "quoting": "double", "has_header": True},
        format="json",
    )

    assert response.status_code == 200, response.json()
    detection = response.json()["detection"]
    assert {k: detection[k] for k in ("encoding", "delimiter", "quotechar", "has_header")} == {
        "encoding": "cp1250",
        "delimiter": ";",
        "quotechar": '"',
        "has_header": True,
    }
    assert detection["columns"] == ["Nazwisko, imię", "Komentarz"]
    assert detection["preview"] == POLISH_ROWS
    assert detection["estimated_rows"] == 2


def test_api_quoting_none_keeps_quotes_in_values(api, analyst):
    data = b'text,label\n"Refund",refund\nplain,x\n'
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("a.csv", data))

    response = api.post(
        f"/api/v1/datasets/{dataset.pk}/detect/", {"quoting": "none"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["detection"]["quotechar"] == ""
    assert response.json()["detection"]["preview"] == [['"Refund"', "refund"], ["plain", "x"]]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param({"encoding": "hex"}, "encoding", f"'hex' {NOT_A_FILE_ENCODING}", id="hex"),
        pytest.param(
            {"encoding": "rot13"}, "encoding", f"'rot13' {NOT_A_FILE_ENCODING}", id="rot13"
        ),
        pytest.param(
            {"encoding": "base64"}, "encoding", f"'base64' {NOT_A_FILE_ENCODING}", id="base64"
        ),
        pytest.param({"encoding": "idna"}, "encoding", f"'idna' {NOT_A_FILE_ENCODING}", id="idna"),
        pytest.param(
            {"delimiter": "\n"},
            "delimiter",
            "A line break cannot be the delimiter: it ends each row. Choose , ; | or a tab.",
            id="newline",
        ),
        pytest.param(
            {"delimiter": "\r"},
            "delimiter",
            "A line break cannot be the delimiter: it ends each row. Choose , ; | or a tab.",
            id="carriage-return",
        ),
        pytest.param(
            {"delimiter": '"'},
            "delimiter",
            'The quote character " cannot also be the delimiter: quotes enclose values that '
            "contain the delimiter. Choose , ; | or a tab.",
            id="double-quote",
        ),
        pytest.param(
            {"quoting": "backticks"},
            "quoting",
            "'backticks' is not a way of quoting this reader knows. Choose double, single or none.",
            id="quoting",
        ),
    ],
)
def test_api_refuses_overrides_no_file_can_be_read_with(api, polish, body, field, message):
    before = polish.detection

    response = api.post(f"/api/v1/datasets/{polish.pk}/detect/", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": message, "errors": {field: [message]}}
    polish.refresh_from_db()
    assert (polish.status, polish.detection) == (Dataset.Status.UPLOADED, before)


# --- the mapping form's separator ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("posted", "separator"),
    [
        pytest.param({"text_separator": "\\n"}, "\n", id="new-line"),
        pytest.param({}, "\n", id="not-sent"),
        pytest.param({"text_separator": "none"}, "", id="nothing"),
        pytest.param({"text_separator": "space"}, " ", id="space"),
        pytest.param({"text_separator": "pipe"}, " | ", id="pipe"),
        pytest.param(
            {"text_separator": "custom", "text_separator_custom": " / "}, " / ", id="custom"
        ),
        pytest.param(
            {"text_separator": "custom", "text_separator_custom": "\\n---\\n"},
            "\n---\n",
            id="custom-with-escapes",
        ),
    ],
)
def test_mapping_form_joins_text_columns_with_the_chosen_separator(
    analyst_client, analyst, posted, separator
):
    data = b"title,body,label\nCard,Blocked again,card\n"
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("a.csv", data))

    response = analyst_client.post(
        f"/datasets/{dataset.pk}/import/",
        {"text_columns": ["title", "body"], "label_column": "label", **posted},
    )

    assertRedirects(response, f"/datasets/{dataset.pk}/", fetch_redirect_response=False)
    assert DatasetJob.objects.get().mapping["text_separator"] == separator


def test_mapping_form_custom_separator_must_be_typed(analyst_client, analyst):
    data = b"title,body,label\nCard,Blocked again,card\n"
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("a.csv", data))

    response = analyst_client.post(
        f"/datasets/{dataset.pk}/import/",
        {"text_columns": ["title", "body"], "text_separator": "custom"},
    )

    assert response.status_code == 400
    assert response.context["mapping_form"].errors == {
        "text_separator_custom": [
            "Type the text to put between the text columns, or choose “Nothing” above."
        ]
    }
    assert not DatasetJob.objects.exists()


def test_mapping_form_shows_a_stored_empty_separator_as_nothing(analyst_client, analyst):
    data = b"title,body,label\nCard,Blocked again,card\n"
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("a.csv", data))
    dataset.mapping = {**dataset.mapping, "text_separator": ""}
    dataset.save(update_fields=["mapping"])

    page = analyst_client.get(f"/datasets/{dataset.pk}/")

    assertContains(
        page, '<option value="none" selected>Nothing: run them together</option>', html=True
    )


# --- encodings: only the listed ones, judged on the whole sample --------------------------------
LATIN_NAMES = [
    ("Technopolis chairman Ilkka Syrjänen said the deal was signed in Espoo .", "neutral"),
    ("Seppälä and Åland Post agreed on the terms , according to Kesko .", "neutral"),
    ("Operating profit rose to EUR 13.1 mn from EUR 8.7 mn , Pöyry said .", "positive"),
    ("The Helsinki-based company also owns Stockmann and Hämeenlinna stores .", "neutral"),
]
PLAIN_ROWS = [
    (f"Sales in period {number} increased by {number} percent , the company said .", "positive")
    for number in range(40)
]
CHINESE_ROWS = [
    ("我想查询一下我的银行卡余额，为什么转账一直没有到账？", "转账"),
    ("今天的天气非常好，我们一起去公园散步吧。", "闲聊"),
]


def csv_bytes(rows, encoding: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("text", "label"), *rows])
    return buffer.getvalue().encode(encoding)


def upload_bytes(user, content: bytes, filename: str = "data.csv") -> Dataset:
    return dataset_upload(user=user, file=SimpleUploadedFile(filename, content))


def imported_records(dataset: Dataset, user) -> list[tuple[str, str]]:
    job = import_now(dataset, user, {"text_columns": ["text"], "label_column": "label"})
    assert job.status == "succeeded", job.error_message
    return list(
        Record.objects.filter(import_run=job).order_by("source_row").values_list("text", "flags")
    )


def test_utf8_with_an_invalid_byte_and_no_accents_is_refused_naming_the_line(analyst):
    # Once detected as iso8859_16, an encoding the README does not list, and imported as
    # "cafĂ( ok" without a word.
    dataset = upload_bytes(analyst, b"text,label\nhello,a\ncaf\xc3\x28 ok,b\nbye,c\n")

    assert dataset.status == Dataset.Status.FAILED
    assert dataset.status_message == (
        "Line 3 has a byte that is not valid UTF-8 (0xc3), while the rest of the file is UTF-8. "
        "Fix or remove that line, or choose the encoding yourself if the file is not UTF-8."
    )
    assert dataset.detection == {}


def test_a_damaged_line_read_with_a_chosen_encoding_is_imported_flagged(analyst):
    dataset = upload_bytes(analyst, b"text,label\nhello,a\ncaf\xc3\x28 ok,b\nbye,c\n")

    dataset = dataset_detect(dataset=dataset, encoding="cp1252")

    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message
    assert imported_records(dataset, analyst) == [
        ("hello", ""),
        ("caf\u00c3( ok", ",wrong_encoding,"),
        ("bye", ""),
    ]
    job = dataset.jobs.get(kind=DatasetJob.Kind.IMPORT)
    assert job.message.endswith(
        " 1 of them read as garbled text in cp1252 and are flagged wrong_encoding: check the "
        "file's encoding (How to read the file)."
    )


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(PLAIN_ROWS + LATIN_NAMES, id="latin-only"),
        pytest.param(PLAIN_ROWS + LATIN_NAMES + CHINESE_ROWS * 15, id="latin-then-chinese"),
    ],
)
def test_gb18030_with_latin_accents_is_read_as_gb18030_exactly(analyst, rows):
    # Once read as cp775: 'Syrjänen' became 'Syrjü0Ŗ1nen' and the import reported no problem.
    dataset = upload_bytes(analyst, csv_bytes(rows, "gb18030"))

    assert dataset.detection["encoding"] == "gb18030"
    assert imported_records(dataset, analyst) == [(text, "") for text, _ in rows]


def test_rows_in_another_encoding_than_the_file_are_flagged_wrong_encoding(analyst):
    content = csv_bytes(PLAIN_ROWS + LATIN_NAMES, "cp1252") + "Café crème,positive\n".encode()
    dataset = upload_bytes(analyst, content)

    assert dataset.detection["encoding"] == "cp1252"
    records = imported_records(dataset, analyst)
    assert records[-1] == ("CafÃ© crÃ¨me", ",wrong_encoding,")
    assert [flags for _, flags in records[:-1]] == [""] * (len(PLAIN_ROWS) + len(LATIN_NAMES))


# --- detection reads whole rows, and refusals name the real cause --------------------------------
def test_a_first_row_longer_than_the_sample_is_read_whole_and_imports(analyst):
    # Once refused with "The file has a header but no rows under it.": the 256 KB sample held
    # only part of the first row, so detection saw a header and nothing under it.
    long_text = "word " * 60_000  # 300 KB
    content = csv_bytes([(long_text, "long"), ("short", "short")], "utf-8")

    dataset = upload_bytes(analyst, content)

    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message
    assert dataset.detection["columns"] == ["text", "label"]
    assert dataset.detection["preview"][1] == ["short", "short"]
    job = import_now(dataset, analyst, {"text_columns": ["text"], "label_column": "label"})
    assert job.status == "succeeded", job.error_message
    assert list(Record.objects.order_by("source_row").values_list("label", "flags")) == [
        ("long", ",truncated,"),
        ("short", ""),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"<!DOCTYPE html>\n<html><head><title>Export</title></head>\n<body><table>"
            b"<tr><td>a,b</td></tr></table></body></html>\n",
            "This file is an HTML page (a web page or a download that returned one), not "
            "delimited text or JSON Lines. Save the table itself as CSV and upload that.",
            id="html-page",
        ),
        pytest.param(
            b'<?xml version="1.0"?>\n<rows><row text="a" label="b"/></rows>\n',
            "This file is an XML document, not delimited text or JSON Lines. Export the table "
            "as CSV and upload that.",
            id="xml",
        ),
        pytest.param(
            b"text;label;" * 30_000,
            "The file is one line of 322.3 KB with no line break, so it holds no rows: this is "
            "not a table with one record per line. Check the delimiter and the line endings.",
            id="one-long-line",
        ),
    ],
)
def test_files_that_are_not_tables_are_refused_naming_the_cause(analyst, content, message):
    dataset = upload_bytes(analyst, content)

    assert dataset.status == Dataset.Status.FAILED
    assert dataset.status_message == message
    assert not Record.objects.exists()
