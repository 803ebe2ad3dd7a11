"""A registered model's alias page (aliases now, history newest first), and deleting a version
with its exports and batch predictions, leaving no file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.urls import reverse

from models_app.batch_prediction import batch_prediction_execute, batch_prediction_start
from models_app.deploy import model_alias_set, model_version_archive, model_version_delete
from models_app.models import BatchPrediction, ModelExport, ModelVersion
from tests.conftest import broker_for_this_process
from tests.models_app.batch_helpers import toy_snapshot, toy_version


@pytest.fixture
def version(db, tmp_path_factory):
    return toy_version(tmp_path_factory)


@pytest.fixture
def broker(redis_url):
    with broker_for_this_process(redis_url):
        yield


# --- aliases --------------------------------------------------------------------------------
def test_the_alias_page_of_a_model_without_aliases_says_so(client_as, version):
    client = client_as("analyst")

    listing = client.get(reverse("models:model_list")).content.decode()
    url = reverse("models:model_aliases", args=[version.registered_model_id])
    assert f'href="{url}"' in listing

    page = client.get(url).content.decode()
    assert 'data-testid="aliases-empty"' in page
    assert 'data-testid="alias-history-empty"' in page


def test_the_alias_page_shows_each_alias_version_and_every_move_newest_first(
    client_as, make_user, tmp_path_factory
):
    first = toy_version(tmp_path_factory, model_name="sentiment")
    second = toy_version(tmp_path_factory, model_name="sentiment")
    other = toy_version(tmp_path_factory, model_name="other-model")
    alice, bob = make_user("analyst"), make_user("admin")
    registered = first.registered_model
    model_alias_set(user=alice, registered_model=registered, name="production", version=first)
    model_alias_set(user=alice, registered_model=registered, name="staging", version=second)
    model_alias_set(user=bob, registered_model=registered, name="production", version=second)
    model_alias_set(
        user=bob, registered_model=other.registered_model, name="elsewhere", version=other
    )

    client = client_as("analyst")
    page = client.get(reverse("models:model_aliases", args=[registered.pk])).content.decode()

    aliases = page.split('data-testid="aliases"')[1].split("</table>")[0]
    assert "@production" in aliases
    assert "@staging" in aliases
    production_row = aliases.split("@production")[1].split("</tr>")[0]
    assert f">v{second.version}<" in production_row
    assert bob.username in production_row
    history = page.split('data-testid="alias-history"')[1].split("</table>")[0]
    rows = history.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == 3  # the other model's alias is not listed
    newest, middle, oldest = rows
    assert "@production" in newest
    assert bob.username in newest
    assert f">v{first.version}<" in newest
    assert f">v{second.version}<" in newest
    assert "@staging" in middle
    assert "—" in middle
    assert "@production" in oldest
    assert alice.username in oldest
    assert "elsewhere" not in page


def test_an_unknown_model_is_a_404_and_annotators_are_refused(client_as, version):
    assert (
        client_as("analyst").get(reverse("models:model_aliases", args=[999999])).status_code == 404
    )
    url = reverse("models:model_aliases", args=[version.registered_model_id])
    assert client_as("annotator").get(url).status_code == 403


# --- deleting a version ---------------------------------------------------------------------
def _version_files(version: ModelVersion) -> list[str]:
    root = Path(default_storage.path(version.artifact_uri))
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_deleting_a_version_removes_its_batch_predictions_exports_and_every_file(
    client_as, make_user, version, broker
):
    analyst = make_user("analyst")
    snapshot = toy_snapshot(rows=8, user=analyst)
    batch = batch_prediction_start(user=analyst, version=version, snapshot=snapshot)
    batch_prediction_execute(batch_id=batch.id)
    batch.refresh_from_db()
    assert default_storage.exists(batch.output_file)
    export_name = f"{version.artifact_uri}/onnx/model-int8.onnx"
    default_storage.save(export_name, open(__file__, "rb"))  # noqa: SIM115 (closed by save)
    ModelExport.objects.create(
        model_version=version, kind="onnx-int8", status="succeeded", file_path=export_name
    )
    assert _version_files(version)

    client = client_as("admin")
    refused = client.post(reverse("models:version_delete", args=[version.pk]), follow=True)
    assert "Archive" in refused.content.decode()
    assert ModelVersion.objects.filter(pk=version.pk)

    model_version_archive(user=analyst, version=version)
    response = client.post(reverse("models:version_delete", args=[version.pk]))

    assert response.status_code == 302
    assert response.url == reverse("models:model_list")
    assert not ModelVersion.objects.filter(pk=version.pk).exists()
    assert not BatchPrediction.objects.filter(pk=batch.pk).exists()
    assert not ModelExport.objects.exists()
    assert not default_storage.exists(batch.output_file)
    assert not Path(default_storage.path(f"predictions/{batch.pk}")).exists()
    assert not Path(default_storage.path(version.artifact_uri)).exists()


def test_a_version_with_a_running_batch_is_not_deleted(analyst, version, broker):
    batch = batch_prediction_start(user=analyst, version=version, snapshot=toy_snapshot(rows=2))
    model_version_archive(user=analyst, version=version)

    with pytest.raises(ValidationError, match="queued or running"):
        model_version_delete(user=analyst, version=version)

    assert BatchPrediction.objects.filter(pk=batch.pk).exists()
    assert _version_files(version)


def test_a_version_with_a_running_evaluation_is_not_deleted(analyst, version):
    from training_app.models import Evaluation

    Evaluation.objects.create(
        model_version=version, snapshot=toy_snapshot(rows=2), status="running"
    )
    model_version_archive(user=analyst, version=version)

    with pytest.raises(ValidationError, match="1 job"):
        model_version_delete(user=analyst, version=version)

    assert ModelVersion.objects.filter(pk=version.pk).exists()


def test_annotators_cannot_delete_versions(client_as, version):
    response = client_as("annotator").post(reverse("models:version_delete", args=[version.pk]))
    assert response.status_code == 403
    assert ModelVersion.objects.filter(pk=version.pk).exists()


def test_the_api_deletes_an_archived_version_and_refuses_others(api_client_as, analyst, version):
    url = f"/api/v1/model-versions/{version.pk}/"
    assert api_client_as("annotator").delete(url).status_code == 403
    refused = api_client_as("admin").delete(url)
    assert refused.status_code == 400
    assert "Archive" in str(refused.json())

    model_version_archive(user=analyst, version=version)
    deleted = api_client_as("admin").delete(url)

    assert deleted.status_code == 200
    assert deleted.json() == {
        "batch_predictions": 0,
        "exports": 0,
        "files": len(version.artifact_files),
    }
    assert not ModelVersion.objects.filter(pk=version.pk).exists()
    assert not _version_files(version)
