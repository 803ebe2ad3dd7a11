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

from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets_app.models import Dataset
from datasets_app.selectors import export_stream
from datasets_app.services import dataset_import_execute, dataset_import_start, dataset_upload
from lepton_web.jobs import JobStatus
from tests.conftest import broker_for_this_process

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
    with broker_for_this_process(redis_url):
        job = dataset_import_start(
            dataset=dataset,
            user=analyst,
            mapping={"text_columns": ["text"], "label_column": "label"},
        )
        dataset_import_execute(job_id=job.pk)
    job.refresh_from_db()
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
    with broker_for_this_process(redis_url):
        job = dataset_import_start(dataset=dataset, user=user)
        dataset_import_execute(job_id=job.pk)
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
