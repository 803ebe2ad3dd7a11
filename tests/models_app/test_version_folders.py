"""A version's folder on local disk when its files sit in remote storage (no `.path()`): serving
keeps one downloaded copy per process machine, other jobs a temporary copy."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage
from django.test import override_settings

from models_app.models import ModelVersion, RegisteredModel
from models_app.services import model_version_local_dir
from models_app.serving import model_version_serving_dir

pytestmark = pytest.mark.django_db


class RemoteStorage(Storage):
    """Like S3: files by name, and no local path for them."""

    files: dict[str, bytes] = {}

    def _open(self, name, mode="rb"):
        if name not in self.files:
            raise FileNotFoundError(name)
        return ContentFile(self.files[name], name=name)

    def _save(self, name, content):
        self.files[name] = content.read()
        return name

    def exists(self, name):
        return name in self.files

    def delete(self, name):
        self.files.pop(name, None)


FILES = {"config.json": b'{"model_type": "bert"}', "onnx/model-int8.onnx": b"graph"}


@pytest.fixture
def remote_version(settings, tmp_path):
    settings.SERVE_CACHE_DIR = tmp_path / "serve-cache"
    remote = {"default": {"BACKEND": f"{__name__}.RemoteStorage"}}
    RemoteStorage.files = {}
    with override_settings(STORAGES={**settings.STORAGES, **remote}):
        for name, content in FILES.items():
            default_storage.save(f"artifacts/remote/{name}", ContentFile(content))
        registered = RegisteredModel.objects.create(name="remote")
        yield ModelVersion.objects.create(
            registered_model=registered,
            version=1,
            artifact_uri="artifacts/remote",
            artifact_files=[{"path": "config.json", "size_bytes": 22}],
            status=ModelVersion.Status.READY,
        )


def test_serving_downloads_the_files_once_with_the_extra_ones_asked_for(remote_version):
    folder = model_version_serving_dir(remote_version, ["onnx/model-int8.onnx"])

    assert (folder / "config.json").read_bytes() == FILES["config.json"]
    assert (folder / "onnx/model-int8.onnx").read_bytes() == b"graph"
    default_storage.delete("artifacts/remote/config.json")
    assert model_version_serving_dir(remote_version, ["onnx/model-int8.onnx"]) == folder
    # Another set of files is another copy; the version's own files alone leave the ONNX out.
    with pytest.raises(FileNotFoundError):
        model_version_serving_dir(remote_version)
    assert not any(path.name.startswith("tmp") for path in folder.parent.iterdir())


def test_other_jobs_get_a_temporary_copy_removed_afterwards(remote_version):
    with model_version_local_dir(remote_version) as folder:
        assert (folder / "config.json").read_bytes() == FILES["config.json"]
        assert not (folder / "onnx").exists()

    assert not folder.exists()


def test_with_remote_storage_each_export_is_its_own_cached_copy(remote_version):
    """S3: the serve cache is keyed on the export's own file name, so an endpoint still on the
    old export keeps reading the old graph after a re-export is stored."""
    from models_app.exports import export_storage_name
    from models_app.models import ModelExport
    from models_app.serving import export_relative_name

    names = {}
    for graph in (b"old graph", b"new graph"):
        export = ModelExport.objects.create(
            model_version=remote_version, kind="onnx-int8", status="succeeded"
        )
        name = default_storage.save(export_storage_name(export), ContentFile(graph))
        ModelExport.objects.filter(pk=export.pk).update(file_path=name)
        export.file_path = name
        names[graph] = export_relative_name(remote_version, export)

    old = model_version_serving_dir(remote_version, [names[b"old graph"]])
    new = model_version_serving_dir(remote_version, [names[b"new graph"]])

    assert names[b"old graph"] != names[b"new graph"]
    assert old != new
    assert (old / names[b"old graph"]).read_bytes() == b"old graph"
    assert (new / names[b"new graph"]).read_bytes() == b"new graph"
