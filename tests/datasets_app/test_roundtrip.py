"""Property: texts written with the csv module survive upload -> import -> export unchanged.

Texts keep leading and trailing whitespace exactly (the import strips labels and ids, never
texts), so the generated texts may start or end with spaces and line breaks; labels are
generated without surrounding whitespace. NUL is excluded (PostgreSQL text cannot hold it and the
import drops it on purpose).

Regression cover: texts with quotes beside ; | or tab, lone carriage returns, and U+2028 or form
feed beside tabs once made detection pick the wrong delimiter, PostgreSQL's COPY reject the row,
or the CSV export split it (see also test_csv_io.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets_app.models import Dataset, Record
from datasets_app.selectors import export_stream
from datasets_app.services import dataset_upload
from lepton_web.jobs import JobStatus
from tests.datasets_app.factories import import_now

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PIECES = [
    ",",
    '"',
    '""',
    "'",
    "\n",
    "\r\n",
    "\t",
    " ",
    ";",
    "|",
    "中文字符",
    "日本語のテキスト",
    "한국어",
    "🙂",
    "👩‍💻",
    "🇫🇷",
    "é",
    "\\",
    "\\.",
    "\\N",
    "NA",
    "null",
    "=SUM(A1)",
    "+",
    "-",
    "@",
    "#",
    "{",
    "}",
]
any_character = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
texts = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(alphabet=any_character, max_size=6)),
    max_size=8,
).map("".join)
labels = st.text(alphabet="abcxyz_-.:é中🙂 09", max_size=12).filter(
    lambda label: label == label.strip()
)


def csv_export_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=st.lists(st.tuples(texts, labels), min_size=1, max_size=8))
def test_texts_survive_upload_import_and_export_unchanged(analyst, redis_url, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # the csv module's defaults: comma, minimal quoting, CRLF
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    content = buffer.getvalue().encode("utf-8")

    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile("roundtrip.csv", content))
    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message
    assert dataset.detection["delimiter"] == ","
    assert dataset.detection["columns"] == ["text", "label"]
    job = import_now(dataset, analyst, {"text_columns": ["text"], "label_column": "label"})
    assert job.status == JobStatus.SUCCEEDED, job.error_message
    dataset.refresh_from_db()

    # JSON Lines: split on "\n" only; str.splitlines() would also split inside texts on
    # U+0085, U+2028 and friends, which json.dumps(ensure_ascii=False) leaves raw.
    jsonl = "".join(export_stream(dataset=dataset, fmt="jsonl"))
    exported = [json.loads(line) for line in jsonl.split("\n") if line]
    assert [(row["text"], row["label"]) for row in exported] == rows
    assert [row["source_row"] for row in exported] == list(range(1, len(rows) + 1))

    exported_csv = "".join(export_stream(dataset=dataset, fmt="csv"))
    table = list(csv.reader(io.StringIO(exported_csv, newline="")))
    assert table[0] == ["source_row", "text", "label", "split"]
    # Unchanged unless a spreadsheet would run the cell as a formula; then one quote is added.
    assert [(text, label) for _, text, label, _ in table[1:]] == [
        (csv_export_cell(text), csv_export_cell(label)) for text, label in rows
    ]


def import_texts(user, redis_url: str, rows: list[tuple[str, str]]) -> Dataset:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([("text", "label"), *rows])
    content = buffer.getvalue().encode("utf-8")
    dataset = dataset_upload(user=user, file=SimpleUploadedFile("texts.csv", content))
    import_now(dataset, user)
    dataset.refresh_from_db()
    return dataset


def test_text_with_lone_carriage_return_survives_import_and_csv_export(analyst, redis_url):
    rows = [("Old Mac line\rending", "mac"), ("Next row", "plain")]

    dataset = import_texts(analyst, redis_url, rows)

    assert dataset.status == Dataset.Status.READY, dataset.status_message
    exported_csv = "".join(export_stream(dataset=dataset, fmt="csv"))
    assert list(csv.reader(io.StringIO(exported_csv, newline=""))) == [
        ["source_row", "text", "label", "split"],
        ["1", "Old Mac line\rending", "mac", ""],
        ["2", "Next row", "plain", ""],
    ]


# --- every shared train file in every encoding the README lists ----------------------------------
SHARED_DATA = Path(os.environ.get("LEPTON_SHARED_DATA", "/nonexistent"))
SHARED_TRAIN_FILES = ["sst2", "financial_phrasebank", "banking77", "trec"]
# The README's list (UTF-8 with or without BOM, UTF-16, GB18030/GBK, Big5, Shift-JIS, cp1252),
# as Python writes each, and the codec detection should name.
LISTED_ENCODINGS = [
    ("utf-8", "utf-8"),
    ("utf-8-sig", "utf-8-sig"),
    ("utf-16", "utf-16"),
    ("gb18030", "gb18030"),
    ("gbk", "gb18030"),
    ("big5", "big5hkscs"),
    # Shift-JIS as Windows writes it: Python's shift_jis maps a few symbols (£, ¬, ~) to other
    # code points than cp932, the superset detection reads Shift-JIS files with.
    ("cp932", "cp932"),
    ("cp1252", "cp1252"),
]
# Rows per file: every row with a non-ASCII character (the ones an encoding can garble) plus
# evenly spaced others, in file order; enough that each file is larger than the 256 KB that
# detection samples first.
ROUNDTRIP_ROWS = 6_000


def shared_rows(name: str) -> list[tuple[str, str]]:
    with (SHARED_DATA / name / "train.csv").open(encoding="utf-8", newline="") as handle:
        rows = [tuple(row) for row in csv.reader(handle)][1:]
    special = {index for index, (text, _) in enumerate(rows) if not text.isascii()}
    step = max(1, len(rows) // max(1, ROUNDTRIP_ROWS - len(special)))
    return [row for index, row in enumerate(rows) if index in special or index % step == 0]


@pytest.mark.skipif(
    not (SHARED_DATA / "README.md").is_file(), reason="LEPTON_SHARED_DATA is not available"
)
@pytest.mark.parametrize(("encoding", "detected"), LISTED_ENCODINGS)
@pytest.mark.parametrize("name", SHARED_TRAIN_FILES)
def test_shared_train_file_in_each_listed_encoding_imports_with_identical_texts(
    analyst, redis_url, name, encoding, detected
):
    # Rows the encoding cannot represent (Latin accents in Big5 or Shift-JIS) are left out: no
    # file in that encoding could hold them. So are the few whose characters the codec reads
    # back as others (cp932 writes '£' as the bytes it reads as the full-width '￡').
    rows = []
    for text, label in shared_rows(name):
        try:
            if (text + label).encode(encoding).decode(detected) != text + label:
                continue
        except UnicodeError:
            continue
        rows.append((text, label))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("text", "label"), *rows])
    content = buffer.getvalue().encode(encoding)

    dataset = dataset_upload(user=analyst, file=SimpleUploadedFile(f"{name}.csv", content))
    assert dataset.status == Dataset.Status.UPLOADED, dataset.status_message
    # A file that comes out as plain ASCII (no row needed more) is the same in every encoding.
    assert dataset.detection["encoding"] == ("utf-8" if content.isascii() else detected)
    job = import_now(dataset, analyst, {"text_columns": ["text"], "label_column": "label"})
    assert job.status == JobStatus.SUCCEEDED, job.error_message

    imported = list(
        Record.objects.filter(import_run=job)
        .order_by("source_row")
        .values_list("text", "label", "flags")
    )
    assert [(text, label) for text, label, _ in imported] == rows
    assert [text for text, _, flags in imported if "wrong_encoding" in flags] == []
