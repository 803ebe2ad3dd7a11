"""A body over what its address accepts is refused (413) before anything reads it, signed in or
not: Django writes a multipart body's files to disk as they arrive, before any login check."""

import pytest
from django.test import RequestFactory

from lepton_web.middleware import _body_limit

MB = 1024 * 1024


def big_multipart(client, path: str, declared: int, **extra):
    # A small real body that claims to be ``declared`` bytes long: refused on the claim alone.
    return client.post(
        path,
        {"file": "x"},
        CONTENT_LENGTH=str(declared),
        **extra,
    )


def test_anonymous_multipart_body_over_the_limit_is_refused_before_it_is_read(client, db):
    response = big_multipart(client, "/login/", 50 * MB)

    assert response.status_code == 413
    assert (
        '<p data-testid="error-detail">This request is 50.0 MB; this address accepts at most '
        "11 MB.</p>" in response.content.decode()
    )


def test_api_body_over_the_limit_is_a_json_413(client, db):
    response = big_multipart(client, "/api/v1/runs/", 12 * MB)

    assert (response.status_code, response.json()) == (
        413,
        {"detail": "This request is 12.0 MB; this address accepts at most 11 MB.", "errors": {}},
    )


def test_body_within_the_limit_goes_through(client, db):
    response = client.post("/login/", {"username": "nobody", "password": "wrong"})

    assert response.status_code == 200  # the login form again, with its error


@pytest.mark.parametrize(
    ("path", "limit_mb"),
    [
        ("/models/versions/1/batch-predictions/start/", 201),
        ("/api/v1/model-versions/1/batch-predictions/", 201),
        ("/models/base-models/", 4097),
        ("/api/v1/base-models/", 4097),
        ("/training/new/", 11),
        ("/no/such/address/", 11),
    ],
)
def test_each_upload_address_accepts_its_own_file_limit(settings, path, limit_mb):
    settings.BASE_MODEL_MAX_UNPACKED_BYTES = 4096 * MB

    assert _body_limit(RequestFactory().post(path)) == limit_mb * MB


@pytest.mark.parametrize("path", ["/datasets/upload/", "/api/v1/datasets/"])
def test_dataset_uploads_keep_their_own_limit_and_messages(path):
    assert _body_limit(RequestFactory().post(path)) is None
