"""Local copies of versions and exports kept in remote storage (S3) are bounded and cleaned:
a deleted export's or version's copy goes at once in the process that deleted it and at the
next sweep in the others, the least recently used copies go when the cache is over its size,
and a copy that a process (this one or another) holds is never removed under it."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import override_settings

from models_app import runtime, serving
from models_app.deploy import deployment_deploy, model_version_archive, model_version_delete
from models_app.exports import export_storage_name
from models_app.models import Deployment, ModelExport, ModelVersion, RegisteredModel
from models_app.runtime.filecache import FileCache
from tests.models_app.test_version_folders import FILES, RemoteStorage

REMOTE = {"default": {"BACKEND": "tests.models_app.test_version_folders.RemoteStorage"}}


# --- the cache alone (plain Python) -------------------------------------------------------------
def _fill(content: bytes):
    def fill(folder: Path) -> None:
        (folder / "model.bin").write_bytes(content)

    return fill


def test_a_sweep_removes_what_keep_refuses_but_never_a_held_copy(tmp_path):
    cache = FileCache(tmp_path)
    held = cache.lease("held", _fill(b"a"), manifest={"wanted": False})
    cache.lease("loose", _fill(b"b"), manifest={"wanted": False}).release()
    cache.lease("wanted", _fill(b"c"), manifest={"wanted": True}).release()

    outcome = cache.sweep(lambda manifest: manifest["wanted"])

    assert (outcome["removed"], outcome["kept_in_use"]) == (1, 1)
    assert not (tmp_path / "loose").exists()
    assert not (tmp_path / "loose.lock").exists()
    assert (held.path / "model.bin").read_bytes() == b"a"  # still there for its holder
    assert (tmp_path / "wanted" / "model.bin").exists()

    held.release()
    assert cache.sweep(lambda manifest: manifest["wanted"])["removed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wanted", "wanted.lock"]


def test_over_its_size_the_least_recently_used_copies_go_first(tmp_path):
    cache = FileCache(tmp_path, max_bytes=2500)
    for index, name in enumerate(["old", "middle", "new"]):
        cache.lease(name, _fill(b"x" * 1000), manifest={}).release()
        # The lock file's time is the copy's last use.
        stamp = time.time() - 100 + index
        os.utime(tmp_path / f"{name}.lock", (stamp, stamp))
    held_old = cache.lease_existing(tmp_path / "old")  # held: skipped, the next oldest goes

    outcome = cache.sweep(lambda manifest: True)

    assert outcome["removed"] == 1
    assert (tmp_path / "old").is_dir()
    assert not (tmp_path / "middle").exists()
    assert (tmp_path / "new").is_dir()
    held_old.release()


def test_a_copy_held_by_another_process_is_not_removed_until_that_process_lets_go(tmp_path):
    cache = FileCache(tmp_path)
    cache.lease("entry", _fill(b"weights"), manifest={}).release()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from models_app.runtime.filecache import FileCache
                lease = FileCache({str(tmp_path)!r}).lease_existing({str(tmp_path / "entry")!r})
                print("held", flush=True)
                sys.stdin.readline()
                print(open(lease.path / "model.bin", "rb").read().decode(), flush=True)
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = cache.sweep(lambda manifest: False)
        assert (outcome["removed"], outcome["kept_in_use"]) == (0, 1)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "weights"  # read after the sweep: still there
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
    # It exited, which let go of its lock: the next sweep removes the copy.
    assert cache.sweep(lambda manifest: False)["removed"] == 1
    assert list(tmp_path.iterdir()) == []


def test_a_reader_after_a_removal_fills_a_fresh_copy(tmp_path):
    cache = FileCache(tmp_path)
    cache.lease("entry", _fill(b"one"), manifest={}).release()
    assert cache.remove("entry")

    with cache.lease("entry", _fill(b"two"), manifest={}) as folder:
        assert (folder / "model.bin").read_bytes() == b"two"
        assert not cache.remove("entry")  # held


def test_readers_and_a_sweep_racing_never_lose_a_file_under_a_lease(tmp_path):
    """Readers lease, read and let go in a loop while a sweep removes every copy not held:
    each reader always finds its whole copy (refilled when a sweep got there first)."""
    import threading

    cache = FileCache(tmp_path)
    stop = threading.Event()
    problems, reads, removals = [], [0], [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                with cache.lease("entry", _fill(b"weights"), manifest={}) as folder:
                    time.sleep(0.001)
                    if (folder / "model.bin").read_bytes() != b"weights":
                        problems.append("wrong content")
                reads[0] += 1
                time.sleep(0.002)  # let go for a moment, so the sweep gets its turns
            except Exception as error:  # a file gone under a lease
                problems.append(repr(error))

    def sweeper() -> None:
        while not stop.is_set():
            removals[0] += cache.sweep(lambda manifest: False)["removed"]

    threads = [threading.Thread(target=reader) for _ in range(2)]
    threads.append(threading.Thread(target=sweeper))
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert problems == []
    assert reads[0] > 0  # both sides really ran
    assert removals[0] > 0


def test_leftovers_of_dead_processes_are_swept(tmp_path):
    cache = FileCache(tmp_path)
    (tmp_path / ".trash-entry-1234").mkdir()
    stale = tmp_path / ".tmp-entry-5678"
    stale.mkdir()
    fresh = tmp_path / ".tmp-entry-9999"  # a fill running now
    fresh.mkdir()
    (tmp_path / "gone.lock").touch()  # a failed fill's lock file
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    cache.sweep(lambda manifest: True)

    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-entry-9999"]


# --- with the registry (remote storage, like S3) ------------------------------------------------
@pytest.fixture
def remote_version(settings, tmp_path, db):
    settings.SERVE_CACHE_DIR = tmp_path / "serve-cache"
    settings.SERVE_CACHE_SWEEP_SECONDS = 0  # sweeps only when a test asks for one
    RemoteStorage.files = {}
    with override_settings(STORAGES={**settings.STORAGES, **REMOTE}):
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
    runtime.model_cache.clear()


def _export(version, graph: bytes) -> tuple[ModelExport, str]:
    export = ModelExport.objects.create(model_version=version, kind="onnx-int8", status="succeeded")
    name = default_storage.save(export_storage_name(export), ContentFile(graph))
    ModelExport.objects.filter(pk=export.pk).update(file_path=name)
    export.file_path = name
    return export, serving.export_relative_name(version, export)


def _copies(settings) -> list[str]:
    root = Path(settings.SERVE_CACHE_DIR)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_deleting_an_export_removes_its_local_copy_and_the_model_loaded_from_it(
    remote_version, settings, django_capture_on_commit_callbacks
):
    _kept, kept_relative = _export(remote_version, b"kept graph")
    gone, gone_relative = _export(remote_version, b"old graph")
    serving.model_version_serving_dir(remote_version, [kept_relative])
    # A model this process loaded from the copy holds it, as a serving process does.
    lease = serving.model_version_serving_copy(remote_version, [gone_relative])
    key = (remote_version.pk, "onnx-int8", remote_version.artifact_uri, gone_relative)
    runtime.model_cache.put(key, serving._ServedModel(object(), lease=lease))
    assert len(_copies(settings)) == 2

    with django_capture_on_commit_callbacks(execute=True):
        gone.delete()

    assert runtime.model_cache.get(key) is None
    assert not lease.held
    assert len(_copies(settings)) == 1
    copy = Path(settings.SERVE_CACHE_DIR) / _copies(settings)[0]
    assert (copy / kept_relative).read_bytes() == b"kept graph"


def test_a_sweep_removes_copies_of_exports_and_versions_deleted_by_another_process(
    remote_version, settings
):
    export, relative = _export(remote_version, b"graph")
    serving.model_version_serving_dir(remote_version, [relative])
    serving.model_version_serving_dir(remote_version)
    other = ModelVersion.objects.create(
        registered_model=remote_version.registered_model,
        version=2,
        artifact_uri="artifacts/remote",
        artifact_files=[{"path": "config.json", "size_bytes": 22}],
        status=ModelVersion.Status.READY,
    )
    serving.model_version_serving_dir(other)
    assert len(_copies(settings)) == 3
    assert serving.serve_cache_sweep()["removed"] == 0  # all still in the registry

    # Deleted elsewhere: no signal reaches this process, only the rows are gone.
    ModelExport.objects.filter(pk=export.pk)._raw_delete(ModelExport.objects.db)
    ModelVersion.objects.filter(pk=other.pk)._raw_delete(ModelVersion.objects.db)
    outcome = serving.serve_cache_sweep()

    assert (outcome["removed"], outcome["kept_in_use"]) == (2, 0)
    assert _copies(settings) == [f"v{remote_version.pk}-{_digest(remote_version)}"]


def _digest(version) -> str:
    import hashlib

    return hashlib.sha256(f"{version.artifact_uri}|".encode()).hexdigest()[:12]


def test_a_copy_a_job_holds_survives_the_sweep_until_the_job_lets_go(remote_version, settings):
    export, relative = _export(remote_version, b"graph")
    with serving.model_version_serving_copy(remote_version, [relative]) as folder:
        ModelExport.objects.filter(pk=export.pk)._raw_delete(ModelExport.objects.db)
        assert serving.serve_cache_sweep()["kept_in_use"] == 1
        assert (folder / relative).read_bytes() == b"graph"

    assert serving.serve_cache_sweep()["removed"] == 1
    assert _copies(settings) == []


def test_deleting_a_version_removes_its_local_copies(remote_version, settings, analyst):
    serving.model_version_serving_dir(remote_version)
    model_version_archive(user=analyst, version=remote_version)

    model_version_delete(user=analyst, version=remote_version)

    assert _copies(settings) == []


def test_a_sweep_is_started_in_the_background_when_due(remote_version, settings, monkeypatch):
    export, relative = _export(remote_version, b"graph")
    serving.model_version_serving_dir(remote_version, [relative])
    ModelExport.objects.filter(pk=export.pk)._raw_delete(ModelExport.objects.db)
    swept = []
    monkeypatch.setattr(serving, "serve_cache_sweep", lambda: swept.append(1))
    monkeypatch.setattr(serving, "_next_sweep", 0.0)
    settings.SERVE_CACHE_SWEEP_SECONDS = 300

    serving.serve_cache_sweep_when_due()
    serving.serve_cache_sweep_when_due()  # not due again for 300 s

    deadline = time.monotonic() + 10
    while not swept and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert swept == [1]


def test_an_endpoint_on_remote_storage_serves_from_a_held_copy(
    remote_version, settings, analyst, tmp_path_factory
):
    """A real model served from a copy: the copy is held while the model is loaded, the sweep
    leaves it, and dropping the model lets the sweep remove it once its version is gone."""
    from tests.models_app.serving_helpers import _built_folder

    source = _built_folder(
        "single_label", ("negative", "positive"), 0, tmp_path_factory.getbasetemp() / "tiny"
    )
    files = []
    for path in sorted(source.rglob("*")):
        if path.is_file():
            relative = path.relative_to(source).as_posix()
            default_storage.save(f"artifacts/tiny/{relative}", ContentFile(path.read_bytes()))
            files.append({"path": relative, "size_bytes": path.stat().st_size})
    version = ModelVersion.objects.create(
        registered_model=remote_version.registered_model,
        version=3,
        task="single_label",
        label_names=["negative", "positive"],
        artifact_uri="artifacts/tiny",
        artifact_files=files,
        status=ModelVersion.Status.READY,
    )
    deployment_deploy(user=analyst, version=version, slug="tiny", runtime="pytorch")
    deployment = serving.deployment_get_live("tiny")

    answer = serving.deployment_predict(deployment=deployment, texts=["good"])

    assert answer.version.pk == version.pk
    assert len(_copies(settings)) == 1
    Deployment.objects.all().delete()
    ModelVersion.objects.filter(pk=version.pk)._raw_delete(ModelVersion.objects.db)
    # The sweep drops this process's model of the deleted version, then its copy.
    assert serving.serve_cache_sweep()["removed"] == 1
    assert _copies(settings) == []
