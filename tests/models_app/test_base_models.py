"""Registering base models: server folders inside the allowed roots, hub ids, hostile zips."""

import io
import json
import zipfile

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from models_app.models import BaseModel
from models_app.services import base_model_register, base_model_upload


def model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    return path


def zip_of(files: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("model.zip", buffer.getvalue(), content_type="application/zip")


def test_folder_inside_the_allowed_roots_is_registered(analyst, settings, tmp_path):
    settings.BASE_MODEL_ROOTS = [str(tmp_path)]
    folder = model_folder(tmp_path / "my-bert")

    base_model = base_model_register(
        user=analyst, name="my bert", source="local", location=str(folder)
    )

    assert base_model.location == str(folder.resolve())
    assert base_model.architecture == "BertModel"


def test_folder_outside_the_allowed_roots_is_refused(analyst, settings, tmp_path):
    settings.BASE_MODEL_ROOTS = [str(tmp_path / "models")]

    with pytest.raises(ValidationError) as caught:
        base_model_register(user=analyst, name="etc", source="local", location="/etc")

    assert caught.value.message_dict == {
        "location": [f"Model folders must be inside: {tmp_path / 'models'}."]
    }
    assert not BaseModel.objects.filter(name="etc").exists()


def test_dot_dot_cannot_escape_the_allowed_root(analyst, settings, tmp_path):
    settings.BASE_MODEL_ROOTS = [str(tmp_path / "models")]
    model_folder(tmp_path / "secret")

    with pytest.raises(ValidationError):
        base_model_register(
            user=analyst,
            name="x",
            source="local",
            location=str(tmp_path / "models" / ".." / "secret"),
        )


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example/x",
        "bert-base-uncased",  # no owner
        "0",
        "owner/",
        "/name",
        "a/b/c",
        "owner/name with space",
        "-owner/name",
        "owner/name.",
        "owner/a--b",
        "owner/a..b",
        "owner/" + "n" * 97,
        "../../etc/passwd",
    ],
)
def test_hub_id_that_is_not_owner_slash_name_is_refused(analyst, db, location):
    with pytest.raises(ValidationError) as caught:
        base_model_register(user=analyst, name="x", source="hub", location=location)

    assert caught.value.message_dict == {
        "location": [
            f"{location!r} is not a Hugging Face Hub id. A hub id is owner/name, e.g. "
            "'google-bert/bert-base-uncased': letters, digits, '-', '_' and '.', with no spaces."
        ]
    }
    assert not BaseModel.objects.filter(name="x").exists()


@pytest.mark.parametrize(
    "location",
    ["google-bert/bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2", "org_1/model.v2"],
)
def test_hub_id_of_the_form_owner_slash_name_is_registered(analyst, db, location):
    base_model = base_model_register(user=analyst, name="x", source="hub", location=location)

    assert (base_model.source, base_model.location) == ("hub", location)


def test_api_refuses_a_malformed_hub_id_with_400(analyst, db):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(analyst)

    response = api.post(
        "/api/v1/base-models/",
        {"name": "x", "source": "hub", "location": "not a hub id"},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["location"]
    assert not BaseModel.objects.filter(name="x").exists()


def test_uploaded_zip_of_a_model_folder_is_unpacked(analyst, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    archive = zip_of(
        {"bert/config.json": b'{"architectures": ["BertModel"]}', "bert/vocab.txt": b"[PAD]\n"}
    )

    base_model = base_model_upload(user=analyst, name="uploaded", archive=archive)

    assert base_model.source == "upload"
    folder = tmp_path / "base_models"
    assert (next(folder.iterdir()) / "vocab.txt").read_bytes() == b"[PAD]\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"../evil/config.json": b"{}"},
            "The archive contains an unsafe path: '../evil/config.json'.",
        ),
        ({"/abs/config.json": b"{}"}, "The archive contains an unsafe path: '/abs/config.json'."),
        (
            {"readme.txt": b"hi"},
            "The archive has no config.json, so it is not a Hugging Face model folder.",
        ),
    ],
)
def test_hostile_or_wrong_zips_are_refused(analyst, settings, tmp_path, files, message):
    settings.MEDIA_ROOT = tmp_path

    with pytest.raises(ValidationError) as caught:
        base_model_upload(user=analyst, name="bad", archive=zip_of(files))

    assert caught.value.message_dict == {"file": [message]}
    assert not BaseModel.objects.filter(name="bad").exists()


def test_files_beside_the_model_folder_in_the_zip_are_left_out(analyst, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    archive = zip_of(
        {
            "bert/config.json": b'{"architectures": ["BertModel"]}',
            "bert/vocab.txt": b"[PAD]\n",
            "notes/readme.txt": b"hello",
        }
    )

    base_model = base_model_upload(user=analyst, name="with-notes", archive=archive)

    folder = next((tmp_path / "base_models").iterdir())
    assert base_model.architecture == "BertModel"
    assert sorted(p.name for p in folder.rglob("*")) == ["config.json", "vocab.txt"]


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": b"{not json"},
        {"config.json": b"[1, 2]"},
        {"config.json": b"{}", "model.safetensors": b"\x01"},
        {"config.json": b"{}", "model.safetensors": b"\x04\0\0\0\0\0\0\0{}{}"},
    ],
)
def test_zip_whose_model_files_cannot_be_read_is_refused_and_leaves_nothing(
    analyst, settings, tmp_path, files
):
    settings.MEDIA_ROOT = tmp_path

    with pytest.raises(ValidationError) as caught:
        base_model_upload(user=analyst, name="broken", archive=zip_of(files))

    assert caught.value.message_dict == {
        "file": [
            "The archive's config.json or model.safetensors cannot be read, so it is not a "
            "Hugging Face model folder."
        ]
    }
    assert list((tmp_path / "base_models").iterdir()) == []
    assert not BaseModel.objects.filter(name="broken").exists()


def test_zip_bomb_is_refused_before_unpacking(analyst, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.BASE_MODEL_MAX_UNPACKED_BYTES = 1000
    archive = zip_of({"config.json": b"{}", "weights.bin": b"\0" * 5000})

    with pytest.raises(ValidationError) as caught:
        base_model_upload(user=analyst, name="bomb", archive=archive)

    assert caught.value.message_dict["file"][0].startswith("The archive unpacks to")
    assert not (tmp_path / "base_models").exists()


def test_not_a_zip_is_refused(analyst, db):
    with pytest.raises(ValidationError) as caught:
        base_model_upload(user=analyst, name="x", archive=SimpleUploadedFile("x.zip", b"not a zip"))

    assert caught.value.message_dict == {
        "file": ["This file is not a zip archive. Zip the model folder and upload the .zip."]
    }


def test_viewer_cannot_register_base_models(make_user, db):
    with pytest.raises(PermissionDenied):
        base_model_register(user=make_user("viewer"), name="x", source="hub", location="org/model")


def test_api_registers_a_hub_id(api_client_as):
    api = api_client_as("analyst")

    response = api.post(
        "/api/v1/base-models/",
        {"name": "hub bert", "source": "hub", "location": "org/bert"},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["location"] == "org/bert"


def test_page_form_adds_a_hub_model(client_as):
    client = client_as("analyst")

    response = client.post(
        "/models/base-models/", {"name": "hub bert", "source": "hub", "location": "org/bert"}
    )

    assert response.status_code == 302
    assert BaseModel.objects.get(name="hub bert").location == "org/bert"


def test_page_form_shows_the_error_next_to_the_field_and_adds_nothing(
    client_as, settings, tmp_path
):
    settings.BASE_MODEL_ROOTS = [str(tmp_path)]
    client = client_as("analyst")

    response = client.post(
        "/models/base-models/", {"name": "etc", "source": "local", "location": "/etc"}
    )

    assert response.status_code == 400
    assert f"Model folders must be inside: {tmp_path}." in response.content.decode()
    assert not BaseModel.objects.filter(name="etc").exists()


def test_viewer_sees_no_form_and_cannot_post(client_as):
    client = client_as("viewer")

    assert 'data-testid="base-model-form"' not in client.get("/models/").content.decode()
    assert (
        client.post(
            "/models/base-models/", {"name": "x", "source": "hub", "location": "a/b"}
        ).status_code
        == 403
    )
