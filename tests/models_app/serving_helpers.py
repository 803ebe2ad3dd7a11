"""Registered versions of a tiny classifier, stored in the test's media storage."""

import shutil
from pathlib import Path

from django.core.files.storage import default_storage

from models_app.models import ModelVersion, RegisteredModel
from tests.models_app.tiny_classifier import save_tiny_classifier

_BUILT: dict[tuple, Path] = {}


def _built_folder(task: str, labels: tuple[str, ...], seed: int, cache_root: Path) -> Path:
    key = (task, labels, seed)
    if key not in _BUILT or not _BUILT[key].is_dir():
        _BUILT[key] = save_tiny_classifier(
            cache_root / f"{task}-{seed}-{'-'.join(labels)}", task=task, labels=labels, seed=seed
        )
    return _BUILT[key]


def make_version(
    tmp_path_factory,
    *,
    model_name: str = "reviews",
    task: str = "single_label",
    labels: tuple[str, ...] = ("negative", "positive"),
    seed: int = 0,
) -> ModelVersion:
    """A READY version whose files sit in default storage (a copy of a cached tiny model)."""
    source = _built_folder(task, labels, seed, tmp_path_factory.getbasetemp() / "tiny-models")
    return store_version(source, model_name=model_name, task=task, labels=labels)


def store_version(
    folder: Path, *, model_name: str, task: str, labels: tuple[str, ...] | list[str]
) -> ModelVersion:
    """The model `folder` copied into default storage as the next READY version of `model_name`."""
    registered, _ = RegisteredModel.objects.get_or_create(name=model_name)
    number = registered.versions.count() + 1
    prefix = f"artifacts/tests/{model_name}-{number}"
    target = Path(default_storage.path(prefix))
    shutil.copytree(folder, target)
    files = [
        {"path": p.relative_to(target).as_posix(), "size_bytes": p.stat().st_size}
        for p in sorted(target.rglob("*"))
        if p.is_file()
    ]
    return ModelVersion.objects.create(
        registered_model=registered,
        version=number,
        task=task,
        label_names=[] if task == "regression" else list(labels),
        artifact_uri=prefix,
        artifact_files=files,
        status=ModelVersion.Status.READY,
    )
