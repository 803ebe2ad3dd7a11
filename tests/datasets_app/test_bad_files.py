"""Every file in tests/data/bad through the real services: upload, detection, import.

Whatever a bad file does, the user gets one plain sentence, no record is kept, and the raw file
stays stored unchanged (so a different encoding or mapping can be tried without a new upload).
tests/data/README.md says what each file is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import Dataset, DatasetJob, Record
from datasets_app.selectors import export_stream, record_page
from datasets_app.services import (
    dataset_detect,
    dataset_import_execute,
    dataset_import_start,
    dataset_upload,
)
from lepton_web.jobs import JobStatus
from tests.conftest import broker_for_this_process

BAD_DIR = Path(__file__).resolve().parent.parent / "data" / "bad"


def upload(user, filename: str) -> tuple[Dataset, bytes]:
    content = (BAD_DIR / filename).read_bytes()
    dataset = dataset_upload(user=user, file=SimpleUploadedFile(filename, content))
    return dataset, content


def run_import(dataset: Dataset, user, redis_url: str, mapping: dict | None = None) -> DatasetJob:
    # The quality report that a finished import queues is published too, so both calls
    # stay on the test Redis.
    with broker_for_this_process(redis_url):
        job = dataset_import_start(dataset=dataset, user=user, mapping=mapping)
        dataset_import_execute(job_id=job.pk)
    job.refresh_from_db()
    return job


def assert_raw_file_kept(dataset: Dataset, content: bytes) -> None:
    dataset.refresh_from_db()
    assert dataset.source_size_bytes == len(content)
    assert dataset.source_sha256 == hashlib.sha256(content).hexdigest()
    with dataset.source_file.open("rb") as stored:
        assert hashlib.sha256(stored.read()).hexdigest() == dataset.source_sha256


def summary(problem_count: int, first: str) -> str:
    count = f"{problem_count} problem{'s' if problem_count != 1 else ''}"
    text = f"Nothing was imported: {count} found. First: {first}"
    # Messages that already say what to do (upload again, retry) get no second instruction.
    if "retry" in text or "upload" in text:
        return text
    return text + " Fix the file or change the mapping, then retry."


def problem(message: str, *, line: int | None = None, column: str | None = None) -> dict:
    return {"line": line, "column": column, "message": message}


# --- files that never get past the upload ------------------------------------------------------
@pytest.mark.parametrize(
    ("filename", "overrides", "message"),
    [
        pytest.param(
            "empty.csv",
            {},
            "The file is empty. Choose a file with a header and rows.",
            id="empty.csv",
        ),
        pytest.param(
            "too_large.csv",
            {"DATASET_MAX_FILE_BYTES": 1024},
            "Files can be up to 1 KB; this one is 2.6 KB.",
            id="too_large.csv",
        ),
    ],
)
def test_upload_rejects_file_and_stores_nothing(
    analyst, settings, tmp_path, filename, overrides, message
):
    for name, value in overrides.items():
        setattr(settings, name, value)
    content = (BAD_DIR / filename).read_bytes()

    with pytest.raises(ValidationError) as caught:
        dataset_upload(user=analyst, file=SimpleUploadedFile(filename, content))

    assert caught.value.message_dict == {"file": [message]}
    assert not Dataset.objects.exists()
    assert Record.objects.count() == 0
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []


# --- files that detection turns down -----------------------------------------------------------
DETECTION_FAILURES = [
    pytest.param("whitespace_only.csv", {}, "The file is empty.", id="whitespace_only.csv"),
    pytest.param("bom_only.csv", {}, "The file is empty.", id="bom_only.csv"),
    pytest.param(
        "header_only.csv",
        {},
        "The file has a header but no rows under it.",
        id="header_only.csv",
    ),
    pytest.param("image.png", {}, "This file is a PNG image, not a table of text.", id="image.png"),
    pytest.param(
        "photo.jpg", {}, "This file is a JPEG image, not a table of text.", id="photo.jpg"
    ),
    pytest.param(
        "workbook.xlsx",
        {},
        "This file is a ZIP archive or an Excel workbook (.xlsx). Save it as CSV and upload that.",
        id="workbook.xlsx",
    ),
    pytest.param(
        "old_workbook.xls",
        {},
        "This file is an old Excel or Word file (.xls/.doc). Save it as CSV and upload that.",
        id="old_workbook.xls",
    ),
    pytest.param(
        "document.pdf", {}, "This file is a PDF document, not a table of text.", id="document.pdf"
    ),
    pytest.param(
        "duplicate_header.csv",
        {},
        "Columns 1 and 3 are both named 'text'. Rename one of them and upload the file again.",
        id="duplicate_header.csv",
    ),
    pytest.param(
        "nul_bytes.csv",
        {},
        "Line 5 contains a NUL byte (0x00), which text files never hold. The file may be binary "
        "or UTF-16 without a byte-order mark; save it as CSV UTF-8.",
        id="nul_bytes.csv",
    ),
    pytest.param(
        "utf16_no_bom_ascii.csv",
        {},
        "Line 1 contains a NUL byte (0x00), which text files never hold. The file may be binary "
        "or UTF-16 without a byte-order mark; save it as CSV UTF-8.",
        id="utf16_no_bom_ascii.csv",
    ),
    pytest.param(
        "huge_line.csv",
        {},
        "The file is one line of 311.4 KB with no line break, so it holds no rows: this is not "
        "a table with one record per line. Check the delimiter and the line endings.",
        id="huge_line.csv",
    ),
    pytest.param(
        "too_many_columns.csv",
        {"DATASET_MAX_COLUMNS": 5},
        "The file has 8 columns; the limit is 5. Check the delimiter, or remove columns you do "
        "not need.",
        id="too_many_columns.csv",
    ),
    pytest.param(
        "unclosed_quote.csv",
        {},
        "A quoted value is never closed, so the rest of the file would be one value. "
        "Check for a stray double quote.",
        id="unclosed_quote.csv",
    ),
    pytest.param(
        "ragged_many.csv",
        {},
        "None of the first rows has the 2 fields the header has: lines 2 to 21 have 3 fields "
        "(and more). Check the delimiter, or put values that contain it in double quotes.",
        id="ragged_many.csv",
    ),
    pytest.param(
        "invalid_line.jsonl",
        {},
        "Line 3 is not valid JSON (Expecting value); JSON Lines files hold one object per line.",
        id="invalid_line.jsonl",
    ),
    pytest.param(
        "non_object_line.jsonl",
        {},
        "Line 2 is not a JSON object; JSON Lines files hold one object per line.",
        id="non_object_line.jsonl",
    ),
    pytest.param(
        "damaged.csv.gz",
        {},
        "The file is a damaged gzip archive: Compressed file ended before the end-of-stream "
        "marker was reached.",
        id="damaged.csv.gz",
    ),
]


@pytest.mark.parametrize(("filename", "overrides", "message"), DETECTION_FAILURES)
def test_detection_fails_with_message_and_keeps_raw_file(
    analyst, settings, filename, overrides, message
):
    for name, value in overrides.items():
        setattr(settings, name, value)

    dataset, content = upload(analyst, filename)

    assert dataset.status == Dataset.Status.FAILED
    assert dataset.status_message == message
    assert dataset.detection == {}
    assert not dataset.jobs.exists()
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


def test_import_start_refuses_dataset_whose_detection_failed(analyst, redis_url):
    dataset, content = upload(analyst, "image.png")

    with broker_for_this_process(redis_url), pytest.raises(ValidationError) as caught:
        dataset_import_start(dataset=dataset, user=analyst, mapping={"text_columns": ["text"]})

    assert caught.value.messages == ["This file is a PNG image, not a table of text."]
    assert not DatasetJob.objects.exists()
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.FAILED
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


def test_detection_names_line_of_stray_byte_in_utf8_file(analyst):
    dataset, content = upload(analyst, "bad_bytes_in_sample.csv")

    assert dataset.status == Dataset.Status.FAILED
    assert dataset.status_message == (
        "Line 51 has a byte that is not valid UTF-8 (0xff), while the rest of the file is "
        "UTF-8. Fix or remove that line, or choose the encoding yourself if the file is not UTF-8."
    )
    assert dataset.detection == {}
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


def test_detection_with_utf8_chosen_names_line_of_stray_byte(analyst):
    dataset, content = upload(analyst, "bad_bytes_in_sample.csv")

    dataset = dataset_detect(dataset=dataset, encoding="utf-8")

    assert dataset.status == Dataset.Status.FAILED
    assert dataset.status_message == (
        "Line 51 has bytes that are not valid utf-8 (byte 0xff). Choose the file's real "
        "encoding (for Excel exports often cp1252) and retry."
    )
    assert dataset.detection == {}
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


# --- files that pass detection and fail the import ----------------------------------------------
IMPORT_FAILURES = [
    # The stray byte is on line 3,935; pandas decodes in blocks, so the message names the
    # chunk of rows it is in.
    pytest.param(
        "bad_bytes_after_sample.csv",
        [
            problem(
                "Part of the file is not valid utf-8 (byte 0xff somewhere in rows 1 to 25,000). "
                "Choose the file's real encoding."
            )
        ],
        id="bad_bytes_after_sample.csv",
    ),
    pytest.param(
        "ragged_rows.csv",
        [
            problem(
                "Line 4 has 3 fields but the header has 2. "
                "A delimiter inside a value needs the value in double quotes.",
                line=4,
            ),
            problem(
                "Line 6 has 4 fields but the header has 2. "
                "A delimiter inside a value needs the value in double quotes.",
                line=6,
            ),
        ],
        id="ragged_rows.csv",
    ),
    pytest.param(
        "ragged_after_quoted_newline.csv",
        [
            problem(
                "Line 5 has 3 fields but the header has 2. "
                "A delimiter inside a value needs the value in double quotes.",
                line=5,
            )
        ],
        id="ragged_after_quoted_newline.csv",
    ),
    pytest.param(
        "unknown_split.csv",
        [
            problem(
                "Line 4 has split 'holdout'. Use train, validation or test, or leave it empty.",
                line=4,
                column="split",
            ),
            problem(
                "Line 7 has split 'eval'. Use train, validation or test, or leave it empty.",
                line=7,
                column="split",
            ),
        ],
        id="unknown_split.csv",
    ),
    pytest.param(
        "unclosed_quote_after_sample.csv.gz",
        [
            problem(
                "A quoted value starting on line 8001 is never closed, so the rest of the file "
                "would be one value. Check for a stray double quote."
            )
        ],
        id="unclosed_quote_after_sample.csv.gz",
    ),
    pytest.param(
        "invalid_line_30.jsonl",
        [
            problem(
                "Line 30 is not valid JSON (Expecting value); JSON Lines files hold one object "
                "per line.",
                line=30,
            )
        ],
        id="invalid_line_30.jsonl",
    ),
    pytest.param(
        "invalid_line_after_sample.jsonl.gz",
        [
            problem(
                "Line 4001 is not valid JSON (Expecting property name enclosed in double quotes); "
                "JSON Lines files hold one object per line.",
                line=4001,
            )
        ],
        id="invalid_line_after_sample.jsonl.gz",
    ),
    pytest.param(
        "non_object_line_30.jsonl",
        [
            problem(
                "Line 30 is not a JSON object; JSON Lines files hold one object per line.",
                line=30,
            )
        ],
        id="non_object_line_30.jsonl",
    ),
    pytest.param(
        "lone_surrogate_30.jsonl",
        [
            problem(
                "Line 30 has a \\u escape of half a character (a lone UTF-16 surrogate such as "
                "\\ud83d), which is not text. Write the character itself, or both halves of its "
                "escape.",
                line=30,
            )
        ],
        id="lone_surrogate_30.jsonl",
    ),
    pytest.param(
        "number_line_30.jsonl",
        [
            problem(
                "Line 30 is not a JSON object; JSON Lines files hold one object per line.",
                line=30,
            )
        ],
        id="number_line_30.jsonl",
    ),
    pytest.param(
        "damaged_after_sample.csv.gz",
        [
            problem(
                "The compressed file is cut short or damaged (Compressed file ended before the "
                "end-of-stream marker was reached). Compress it again and upload it."
            )
        ],
        id="damaged_after_sample.csv.gz",
    ),
]


@pytest.mark.parametrize(("filename", "problems"), IMPORT_FAILURES)
def test_import_fails_with_problems_and_keeps_nothing(analyst, redis_url, filename, problems):
    dataset, content = upload(analyst, filename)
    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message

    job = run_import(dataset, analyst, redis_url)

    assert job.status == JobStatus.FAILED
    assert job.problems == problems
    assert job.error_message == summary(len(problems), problems[0]["message"])
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.FAILED
    assert dataset.status_message == job.error_message
    assert dataset.active_import is None
    assert dataset.record_count == 0
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


def test_import_start_rejects_mapping_with_missing_column(analyst, redis_url):
    dataset, content = upload(analyst, "missing_column.csv")

    with broker_for_this_process(redis_url), pytest.raises(ValidationError) as caught:
        dataset_import_start(
            dataset=dataset,
            user=analyst,
            mapping={"text_columns": ["review"], "label_column": "label"},
        )

    assert caught.value.message_dict == {
        "mapping": ["The text column 'review' is not in the file. Its columns are: text, label."]
    }
    assert not DatasetJob.objects.exists()
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.UPLOADED
    assert dataset.mapping == {
        "text_columns": ["text"],
        "text_separator": "\n",
        "label_column": "label",
        "split_column": None,
        "id_column": None,
    }
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


# --- files that look dangerous or odd but import exactly ---------------------------------------
FORMULA_TEXTS = [
    ('=HYPERLINK("http://evil.example","click")', "phishing"),
    ("+1 555 0100 call me", "contact"),
    ("-5 degrees outside", "weather"),
    ("@SUM(A1:A2)", "formula"),
    ("A normal message", "normal"),
]


def test_formula_cells_import_exactly_and_only_csv_export_escapes_them(analyst, redis_url):
    dataset, content = upload(analyst, "formula_injection.csv")

    job = run_import(dataset, analyst, redis_url)

    assert job.status == JobStatus.SUCCEEDED, job.error_message
    dataset.refresh_from_db()
    assert list(Record.objects.order_by("source_row").values_list("text", "label")) == (
        FORMULA_TEXTS
    )
    jsonl = "".join(export_stream(dataset=dataset, fmt="jsonl"))
    assert jsonl.splitlines() == [
        json.dumps(
            {"source_row": row, "text": text, "label": label, "split": ""}, ensure_ascii=False
        )
        for row, (text, label) in enumerate(FORMULA_TEXTS, start=1)
    ]
    exported_csv = "".join(export_stream(dataset=dataset, fmt="csv"))
    assert exported_csv == (
        "source_row,text,label,split\r\n"
        '1,"\'=HYPERLINK(""http://evil.example"",""click"")",phishing,\r\n'
        "2,'+1 555 0100 call me,contact,\r\n"
        "3,'-5 degrees outside,weather,\r\n"
        "4,'@SUM(A1:A2),formula,\r\n"
        "5,A normal message,normal,\r\n"
    )
    assert list(csv.reader(io.StringIO(exported_csv)))[1][1] == (
        "'" + '=HYPERLINK("http://evil.example","click")'
    )
    assert_raw_file_kept(dataset, content)


def test_utf16_without_bom_and_with_accents_imports_exactly(analyst, redis_url):
    dataset, content = upload(analyst, "utf16_no_bom.csv")
    assert dataset.detection["encoding"] == "utf_16_le"

    job = run_import(dataset, analyst, redis_url)

    assert job.status == JobStatus.SUCCEEDED, job.error_message
    expected = [
        line.rsplit(",", 1)
        for line in content.decode("utf-16-le").splitlines()[1:]  # after the header
    ]
    assert [
        list(pair) for pair in Record.objects.order_by("source_row").values_list("text", "label")
    ] == expected
    assert expected[0][0] == "I saw that my transfer was déclinée. (message 1)"
    assert_raw_file_kept(dataset, content)


def test_jsonl_field_missing_on_some_lines_gives_valid_metadata(analyst, redis_url):
    dataset, content = upload(analyst, "sparse_fields.jsonl")

    job = run_import(dataset, analyst, redis_url)

    assert job.status == JobStatus.SUCCEEDED, job.error_message
    records = list(Record.objects.order_by("source_row"))
    assert records[0].metadata == {"note": "from chat"}
    assert records[1].metadata == {"note": None}
    assert_raw_file_kept(dataset, content)


def test_label_longer_than_column_is_a_problem_not_a_crash(analyst, redis_url):
    dataset, content = upload(analyst, "long_label.csv")

    job = run_import(dataset, analyst, redis_url)

    assert job.status == JobStatus.FAILED
    message = (
        "Line 3 has a label of 600 characters; labels can be at most 500. Shorten it or map "
        "another column."
    )
    assert job.problems == [problem(message, line=3, column="label")]
    assert job.error_message == summary(1, message)
    assert Record.objects.count() == 0
    assert_raw_file_kept(dataset, content)


def test_short_and_long_rows_are_listed_by_line_up_to_the_cap(analyst, redis_url):
    # Short rows were once padded with empty values in silence (a stray line break split one
    # record in two, one half without a label), while long rows failed the import.
    lines = ["text,label", *[f"good {n},a" for n in range(5)]]
    for n in range(15):
        lines += [f"broken text {n}", f"continued {n},b", f"too,many,fields {n}"]
    content = ("\n".join(lines) + "\n").encode()
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("ragged.csv", content))
    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message

    job = run_import(dataset, analyst, redis_url)

    short = (
        "has 1 field but the header has 2. A line break inside a value needs the value in "
        "double quotes; otherwise add the missing fields (they may be empty)."
    )
    long = (
        "has 3 fields but the header has 2. A delimiter inside a value needs the value in double "
        "quotes."
    )
    expected = []
    for n in range(15):
        expected += [
            problem(f"Line {7 + 3 * n} {short}", line=7 + 3 * n),
            problem(f"Line {9 + 3 * n} {long}", line=9 + 3 * n),
        ]
    assert job.status == JobStatus.FAILED
    assert job.problems == expected[:20]
    assert job.error_message == (
        f"Nothing was imported: 20 problems (and more) found. First: Line 7 {short} "
        "Fix the file or change the mapping, then retry."
    )
    assert Record.objects.count() == 0


def test_a_row_in_another_encoding_is_imported_flagged_and_listed_by_its_filter(analyst, redis_url):
    rows = "".join(f"plain message {n},a\n" for n in range(30))
    content = (
        b"text,label\n"
        + rows.encode()
        + "Größe passt,b\nSchöne Grüße,b\nÇa coûte très cher,b\nEl niño,b\n".encode("cp1252")
        + "Café,c\n".encode()
    )
    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("mixed.csv", content))
    assert dataset.detection["encoding"] == "cp1252"

    job = run_import(dataset, analyst, redis_url)

    assert job.status == JobStatus.SUCCEEDED, job.error_message
    assert job.message.endswith(
        "1 of them read as garbled text in cp1252 and are flagged wrong_encoding: check the "
        "file's encoding (How to read the file)."
    )
    dataset.refresh_from_db()
    page = record_page(dataset=dataset, flag="wrong_encoding")
    assert [(r.text, r.flags) for r in page.records] == [("CafÃ©", ",wrong_encoding,")]
