"""Uploads over DATASET_MAX_FILE_MB are refused before they are read (issue 9, item 23).

The requests declare a Content-Length of gigabytes over a body of a few bytes, read through a
payload that counts what is read from it: the refusal must come with nothing read (once the
whole body was read, and spooled to disk, before the service refused the file).
"""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser
from django.test.client import BOUNDARY, MULTIPART_CONTENT, FakePayload, encode_multipart
from pytest_django.asserts import assertContains
from rest_framework.test import APIClient

from datasets_app.models import Dataset
from datasets_app.uploads import DatasetUploadLimitHandler, upload_refusal

THREE_GB = str(3 * 1024**3)
REFUSED = (
    "Files can be up to 1 MB; this upload is 3 GB. Split the file, or compress it (.gz), and "
    "upload it again."
)


class CountingPayload(FakePayload):
    """The request body; remembers how many bytes were read from it."""

    bytes_read = 0

    def read(self, *args, **kwargs):
        data = super().read(*args, **kwargs)
        self.bytes_read += len(data)
        return data


def declared_three_gb(files: dict) -> tuple[dict, CountingPayload]:
    """Request keyword arguments declaring 3 GB over the small multipart body of ``files``."""
    payload = CountingPayload(encode_multipart(BOUNDARY, files))
    return {
        "content_type": MULTIPART_CONTENT,
        "CONTENT_LENGTH": THREE_GB,
        "wsgi.input": payload,
    }, payload


@pytest.fixture
def one_mb_limit(settings):
    settings.DATASET_MAX_FILE_BYTES = 1024 * 1024


def small_csv() -> SimpleUploadedFile:
    return SimpleUploadedFile("data.csv", b"text,label\nhello,greeting\n", content_type="text/csv")


def stored_files(tmp_path) -> list:
    return [path for path in (tmp_path / "media").rglob("*") if path.is_file()]


def test_page_upload_declaring_more_than_the_limit_is_refused_before_reading(
    analyst_client, one_mb_limit, tmp_path
):
    request, payload = declared_three_gb({"file": small_csv()})

    response = analyst_client.generic(
        "POST", "/datasets/upload/", headers={"Accept": "application/json"}, **request
    )

    assert response.status_code == 413
    assert response.json() == {"detail": REFUSED, "errors": {"file": [REFUSED]}}
    assert payload.bytes_read == 0
    assert not Dataset.objects.exists()
    assert stored_files(tmp_path) == []


def test_plain_form_upload_over_the_limit_shows_the_sentence_on_a_page(
    analyst_client, one_mb_limit
):
    request, payload = declared_three_gb({"file": small_csv(), "name": "Big"})

    response = analyst_client.generic("POST", "/datasets/upload/", **request)

    assertContains(response, REFUSED, status_code=413)
    assertContains(response, 'href="/datasets/"', status_code=413)
    assert payload.bytes_read == 0
    assert not Dataset.objects.exists()


def test_api_upload_declaring_more_than_the_limit_is_refused_before_reading(
    analyst, one_mb_limit, tmp_path
):
    client = APIClient()
    client.force_authenticate(analyst)
    request, payload = declared_three_gb({"file": small_csv()})

    response = client.generic("POST", "/api/v1/datasets/", **request)

    assert response.status_code == 413
    assert response.json() == {"detail": REFUSED, "errors": {"file": [REFUSED]}}
    assert payload.bytes_read == 0
    assert not Dataset.objects.exists()
    assert stored_files(tmp_path) == []


def test_uploads_within_the_limit_are_still_accepted(analyst_client, one_mb_limit):
    response = analyst_client.post(
        "/datasets/upload/", {"file": small_csv()}, headers={"Accept": "application/json"}
    )

    assert response.status_code == 201
    assert Dataset.objects.count() == 1


def test_without_a_declared_length_reading_stops_at_the_limit(rf):
    # What the handler does when the length was not declared: it stops the parser (and so the
    # reading of the body) once the file passes the limit, and says why.
    body = encode_multipart(BOUNDARY, {"file": SimpleUploadedFile("big.csv", b"x" * 2_000_000)})
    stream = io.BytesIO(body)
    request = rf.post("/datasets/upload/")
    handler = DatasetUploadLimitHandler(request, limit_bytes=100_000)
    meta = {"CONTENT_TYPE": MULTIPART_CONTENT, "CONTENT_LENGTH": str(len(body))}

    _post, files = MultiPartParser(
        meta, stream, [handler, MemoryFileUploadHandler(request)]
    ).parse()

    assert dict(files) == {}
    assert stream.tell() < 300_000  # of 2 MB: a block or two past the limit, never the rest
    assert upload_refusal(request) == (
        "Files can be up to 97.7 KB; this one is larger, so the upload was stopped there. Split "
        "the file, or compress it (.gz), and upload it again."
    )
