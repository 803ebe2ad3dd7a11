"""Rows of an uploaded file that a batch prediction leaves out: an empty text is counted in
the job's message (before, it said 'Predicted 3 rows' for a file of five and nothing else),
and a line that cannot be read fails the job naming the line, as an import does."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from models_app.batch_prediction import batch_prediction_execute, batch_prediction_start
from tests.conftest import broker_for_this_process
from tests.models_app.batch_helpers import toy_version


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


def run(analyst, version, content: bytes, name: str = "in.csv"):
    batch = batch_prediction_start(
        user=analyst, version=version, upload=SimpleUploadedFile(name, content)
    )
    batch_prediction_execute(batch_id=batch.id)
    batch.refresh_from_db()
    assert batch.status == "succeeded", batch.error_message
    return batch


def test_rows_with_an_empty_text_are_counted_in_the_message(analyst, version, broker):
    content = (
        b"text,label\n"
        b"a good movie,positive\n"
        b",negative\n"
        b"   ,positive\n"
        b"great,positive\n"
        b"awful,negative\n"
    )

    batch = run(analyst, version, content)

    assert batch.rows_total == 3
    assert batch.message == ("Predicted 3 rows with PyTorch. Left out 2 rows with an empty text.")
    with default_storage.open(batch.output_file, "rb") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read().decode("utf-8"))))
    assert [(row["row"], row["text"]) for row in rows] == [
        ("1", "a good movie"),
        ("4", "great"),
        ("5", "awful"),
    ]


def test_a_line_that_cannot_be_read_fails_the_job_naming_it(analyst, version, broker):
    """Before, the line was dropped silently and every later row's number moved up by one, so
    the output no longer matched the file's rows."""
    content = b"text,label\ngood,positive\na bad film,negative,extra\ngreat,positive\n"
    batch = batch_prediction_start(
        user=analyst, version=version, upload=SimpleUploadedFile("in.csv", content)
    )
    batch_prediction_execute(batch_id=batch.id)

    batch.refresh_from_db()
    assert batch.status == "failed"
    assert batch.error_message == (
        "Line 3 has 3 fields but the header has 2. A delimiter inside a value needs the value "
        "in double quotes. Fix the file and upload it again."
    )
    assert not batch.output_file


def test_a_clean_file_says_nothing_more(analyst, version, broker):
    batch = run(analyst, version, b"text\ngood\nbad\n")

    assert batch.message == "Predicted 2 rows with PyTorch."
