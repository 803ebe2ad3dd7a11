"""Re-exporting a version: every export has a storage name of its own, so a re-export (or a
failed one) never changes the file a live endpoint serves; the endpoint moves onto a new export
only through a deploy or promote; superseded exports that nothing serves go with their files."""

import hashlib
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from models_app import runtime
from models_app.deploy import (
    deployment_deploy,
    deployment_promote,
    model_version_archive,
    model_version_delete,
)
from models_app.exports import model_export_execute
from models_app.models import Deployment, ModelExport
from models_app.serving import deployment_get_live, deployment_predict
from tests.models_app.serving_helpers import make_version
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows

pytestmark = pytest.mark.django_db

TEXTS = ["good", "this is bad number 7 and the movie is awful", "a fine movie"]


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


def _export(version, kind="onnx-int8"):
    export = ModelExport.objects.create(model_version=version, kind=kind)
    done = model_export_execute(export_id=export.pk)
    assert done.status == "succeeded", done.error_message
    return done


def _digest(name: str) -> str:
    with default_storage.open(name, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _served_files() -> set[str]:
    """The ONNX files the loaded models in this process were read from."""
    return {key[3] for key in list(runtime.model_cache.keys()) if key[3]}


def test_a_re_export_does_not_change_what_a_live_endpoint_serves(
    version, analyst, django_capture_on_commit_callbacks
):
    old = _export(version)
    deployment_deploy(user=analyst, version=version, slug="live")
    before = deployment_predict(deployment=deployment_get_live("live"), texts=TEXTS)
    old_digest = _digest(old.file_path)

    with django_capture_on_commit_callbacks(execute=True):
        new = _export(version)

    assert new.file_path != old.file_path
    assert default_storage.exists(new.file_path)
    assert _digest(old.file_path) == old_digest  # not written over
    assert ModelExport.objects.filter(pk=old.pk).exists()  # served: not pruned
    runtime.model_cache.clear()  # as a freshly started serving process
    after = deployment_predict(deployment=deployment_get_live("live"), texts=TEXTS)
    assert after.deployment.export.pk == old.pk
    assert after.deployment.export.file_path == old.file_path
    assert _served_files() == {old.file_path.removeprefix(f"{version.artifact_uri}/")}
    assert [r["scores"] for r in after.results] == [r["scores"] for r in before.results]

    # Only an explicit promote moves the endpoint; the new file is a new cache entry, and the
    # old export, now superseded and served by nothing, goes with its file.
    with django_capture_on_commit_callbacks(execute=True):
        deployment_promote(
            user=analyst, deployment=Deployment.objects.get(slug="live"), version=version
        )
    promoted = deployment_predict(deployment=deployment_get_live("live"), texts=TEXTS)
    assert promoted.deployment.export.pk == new.pk
    assert new.file_path.removeprefix(f"{version.artifact_uri}/") in _served_files()
    assert not ModelExport.objects.filter(pk=old.pk).exists()
    assert not default_storage.exists(old.file_path)


def test_a_failed_re_export_leaves_the_served_file_untouched(version, analyst, monkeypatch):
    old = _export(version)
    deployment_deploy(user=analyst, version=version, slug="live")
    old_digest = _digest(old.file_path)
    onnx_folder = f"{version.artifact_uri}/onnx"
    stored_before = _all_files(onnx_folder)

    real_save = default_storage.save

    def save_half_then_fail(name, content, **kwargs):
        real_save(name, content, **kwargs)  # the file lands in storage, then the store breaks
        raise OSError("storage connection reset")

    monkeypatch.setattr(default_storage, "save", save_half_then_fail)
    failed = ModelExport.objects.create(model_version=version, kind="onnx-int8")
    with pytest.raises(OSError, match="connection reset"):
        model_export_execute(export_id=failed.pk)
    monkeypatch.undo()

    failed.refresh_from_db()
    assert failed.status == "failed"
    assert failed.file_path == ""
    assert _digest(old.file_path) == old_digest
    assert _all_files(onnx_folder) == stored_before  # no half-stored file left behind
    answer = deployment_predict(deployment=deployment_get_live("live"), texts=TEXTS)
    assert answer.deployment.export.pk == old.pk
    assert answer.runtime == "onnx-int8"


def _all_files(prefix: str) -> set[str]:
    root = Path(default_storage.path(prefix))
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_superseded_export_that_nothing_serves_is_deleted_with_its_file(
    version, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = _export(version, "onnx-fp32")
        second = _export(version, "onnx-fp32")
        other_kind = _export(version, "onnx-int8")

    assert not ModelExport.objects.filter(pk=first.pk).exists()
    assert not default_storage.exists(first.file_path)
    assert default_storage.exists(second.file_path)
    assert default_storage.exists(other_kind.file_path)  # another kind is not superseded


def test_deleting_an_export_row_removes_its_file_unless_another_row_names_it(
    version, django_capture_on_commit_callbacks
):
    export = _export(version, "onnx-fp32")
    # Rows from before exports had folders of their own shared one name per kind.
    shared = f"{version.artifact_uri}/onnx/model-int8.onnx"
    default_storage.save(shared, open(__file__, "rb"))  # noqa: SIM115 (closed by save)
    legacy = [
        ModelExport.objects.create(
            model_version=version, kind="onnx-int8", status="failed", file_path=shared
        )
        for _ in range(2)
    ]

    with django_capture_on_commit_callbacks(execute=True):
        export.delete()
        legacy[0].delete()
    assert not default_storage.exists(export.file_path)
    assert not Path(default_storage.path(export.file_path)).parent.exists()  # its own folder
    assert default_storage.exists(shared)

    with django_capture_on_commit_callbacks(execute=True):
        legacy[1].delete()
    assert not default_storage.exists(shared)


def test_deleting_a_version_counts_and_removes_its_export_files_once(
    version, analyst, make_user, django_capture_on_commit_callbacks
):
    int8 = _export(version, "onnx-int8")
    fp32 = _export(version, "onnx-fp32")
    model_version_archive(user=analyst, version=version)

    with django_capture_on_commit_callbacks(execute=True):
        result = model_version_delete(user=make_user("admin"), version=version)

    assert result["exports"] == 2
    assert result["files"] == len(version.artifact_files) + 2
    assert not default_storage.exists(int8.file_path)
    assert not default_storage.exists(fp32.file_path)
