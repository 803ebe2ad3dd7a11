"""ONNX exports as jobs: files stored next to the version, parity numbers recorded on it, a
failed or low-agreement export never chosen by default, downloads with the tokenizer."""

import io
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from models_app import runtime
from models_app.deploy import default_runtime, deployment_deploy
from models_app.exports import model_export_execute, model_export_start
from models_app.models import ModelExport
from tests.models_app.serving_helpers import make_version
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.model_cache.clear()
    yield
    runtime.model_cache.clear()


@pytest.fixture
def version(tmp_path_factory):
    version = make_version(tmp_path_factory)
    version.snapshot = make_snapshot(toy_rows(12))
    version.save()
    return version


def _export(version, kind, user=None):
    export = ModelExport.objects.create(model_version=version, kind=kind, created_by=user)
    return model_export_execute(export_id=export.pk)


@pytest.mark.parametrize("kind", ["onnx-fp32", "onnx-int8"])
def test_export_records_parity_on_the_validation_split(version, kind):
    export = _export(version, kind)

    assert export.status == "succeeded", export.error_message
    export.refresh_from_db()
    assert export.parity_examples == 4  # the toy snapshot's validation split
    assert export.details["parity_split"] == "validation"
    assert export.agreement == 1.0
    assert 0 <= export.max_abs_logit_delta < (1e-4 if kind == "onnx-fp32" else 0.1)
    assert default_storage.exists(export.file_path)
    # A folder of its own per export (a re-export never writes over a served file).
    assert export.file_path.startswith(f"{version.artifact_uri}/onnx/export-{export.pk}-")
    assert export.file_path.endswith(f"/model-{kind[5:]}.onnx")
    assert export.details["optimized"] is True
    assert "label agreement with PyTorch" in export.message


def test_default_runtime_is_the_fastest_export_that_passed_parity(version):
    assert default_runtime(version) == "pytorch"
    _export(version, "onnx-fp32")
    assert default_runtime(version) == "onnx-fp32"
    int8 = _export(version, "onnx-int8")
    assert default_runtime(version) == "onnx-int8"

    ModelExport.objects.filter(pk=int8.pk).update(agreement=0.98)

    assert default_runtime(version) == "onnx-fp32"


def test_onnx_endpoint_predicts_like_pytorch(version, analyst):
    from models_app.serving import deployment_get_live, deployment_predict

    _export(version, "onnx-int8")
    deployment_deploy(user=analyst, version=version, slug="fast")
    deployment_deploy(user=analyst, version=version, slug="slow", runtime="pytorch")
    texts = ["good", "this is bad number 7 and the movie is awful", "a fine movie"]

    fast = deployment_predict(deployment=deployment_get_live("fast"), texts=texts)
    slow = deployment_predict(deployment=deployment_get_live("slow"), texts=texts)

    assert fast.runtime == "onnx-int8"
    assert [r["label"] for r in fast.results] == [r["label"] for r in slow.results]
    for quick, reference in zip(fast.results, slow.results, strict=True):  # padded batch
        assert quick["scores"] == pytest.approx(reference["scores"], abs=0.02)


def test_export_without_a_validation_split_is_not_chosen_by_default(tmp_path_factory):
    version = make_version(tmp_path_factory)  # no snapshot: nothing to check parity on

    export = _export(version, "onnx-fp32")

    assert export.status == "succeeded"
    assert export.agreement is None
    assert "not chosen by default" in export.message
    assert default_runtime(version) == "pytorch"


def test_broken_weights_fail_the_export_with_a_reason(version):
    default_storage.delete(f"{version.artifact_uri}/model.safetensors")

    export = _export(version, "onnx-fp32")

    assert export.status == "failed"
    assert export.error_message.startswith("The model weights cannot be loaded")


def test_a_second_export_while_one_runs_is_refused(version, analyst):
    ModelExport.objects.create(model_version=version, kind="onnx-int8", status="running")

    with pytest.raises(ValidationError, match="already running"):
        model_export_start(user=analyst, version=version, kind="onnx-int8")


def test_export_download_holds_the_onnx_file_and_the_tokenizer(version, api_client_as):
    export = _export(version, "onnx-int8")

    response = api_client_as("analyst").get(f"/api/v1/exports/{export.pk}/download/")

    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    folder = f"reviews-v{version.version}-onnx-int8"
    assert f"{folder}/model.onnx" in names
    assert f"{folder}/tokenizer.json" in names
    assert f"{folder}/config.json" in names
    assert not any(name.endswith(".safetensors") for name in names)


def test_the_page_download_gives_the_same_zip_and_refuses_unfinished_or_unknown_exports(
    version, client_as
):
    done = _export(version, "onnx-fp32")
    running = ModelExport.objects.create(model_version=version, kind="onnx-int8", status="running")
    client = client_as("viewer")

    response = client.get(f"/models/exports/{done.pk}/download/")
    unfinished = client.get(f"/models/exports/{running.pk}/download/")
    unknown = client.get(f"/models/exports/{running.pk + 1000}/download/")

    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert f"reviews-v{version.version}-onnx-fp32/model.onnx" in names
    assert unfinished.status_code == 404
    assert unknown.status_code == 404


def test_an_export_whose_file_is_gone_from_storage_is_a_404_not_a_500(
    version, client_as, api_client_as
):
    gone = ModelExport.objects.create(
        model_version=version,
        kind="onnx-fp32",
        status="succeeded",
        file_path=f"{version.artifact_uri}/onnx/gone.onnx",
    )

    page = client_as("viewer").get(f"/models/exports/{gone.pk}/download/")
    api = api_client_as("analyst").get(f"/api/v1/exports/{gone.pk}/download/")

    assert page.status_code == 404
    assert api.status_code == 404
    assert "missing from storage" in api.json()["detail"]


@pytest.mark.parametrize(
    ("role", "body", "code", "text"),
    [
        ("viewer", {"kind": "onnx-int8"}, 403, "Your role (viewer) cannot create"),
        ("analyst", {"kind": "onnx-fp16"}, 400, "not a valid choice"),
        ("analyst", {}, 400, "required"),
    ],
)
def test_bad_export_requests_are_refused_and_start_nothing(
    version, api_client_as, role, body, code, text
):
    response = api_client_as(role).post(
        f"/api/v1/model-versions/{version.pk}/exports/", body, format="json"
    )

    assert response.status_code == code
    assert text in str(response.json())
    assert not ModelExport.objects.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "prefix"}, "Prefix-tuned versions cannot be exported"),
        ({"status": "failed"}, "is not ready, so it cannot be exported"),
    ],
)
def test_versions_that_cannot_be_exported_say_why(version, analyst, change, message):
    for field, value in change.items():
        setattr(version, field, value)
    version.save()

    with pytest.raises(ValidationError, match=message):
        model_export_start(user=analyst, version=version, kind="onnx-fp32")
    assert not ModelExport.objects.exists()
