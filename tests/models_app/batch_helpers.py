"""A READY version of the toy classifier in media storage, and a snapshot of real records."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.core.files.storage import default_storage

from datasets_app.models import Snapshot, SnapshotRecord
from models_app.models import ModelVersion, RegisteredModel
from tests.datasets_app.factories import DatasetFactory, RecordFactory
from tests.models_app.toy_classifier import LABELS, save_toy_classifier, toy_rows

_TOY: dict[str, Path] = {}


def toy_version(tmp_path_factory, *, model_name: str = "toy-sentiment") -> ModelVersion:
    """The toy classifier ("good"/"great" -> positive), trained once per test session."""
    folder = _TOY.get("folder")
    if folder is None or not folder.is_dir():
        folder = save_toy_classifier(tmp_path_factory.getbasetemp() / "toy-classifier-batch")
        _TOY["folder"] = folder
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
        task="single_label",
        label_names=list(LABELS),
        artifact_uri=prefix,
        artifact_files=files,
        status=ModelVersion.Status.READY,
    )


def toy_snapshot(*, rows: int = 40, user=None, extra: list[tuple[str, str]] = ()) -> Snapshot:
    """A dataset of real records (toy texts, given labels) and a snapshot of them: rows go two
    to the test split, two to train, and so on (each split half positive, half negative)."""
    dataset = DatasetFactory(**({"created_by": user} if user else {}))
    snapshot = Snapshot.objects.create(dataset=dataset, number=1, created_by=user)
    items = [*toy_rows(rows, seed=5), *extra]
    for index, (text, label) in enumerate(items):
        split = "test" if index % 4 < 2 else "train"
        record = RecordFactory(dataset=dataset, text=text, label=label, split=split)
        SnapshotRecord.objects.create(
            snapshot=snapshot,
            record_id=record.id,
            source_row=record.source_row,
            text=text,
            label=label,
            split=split,
        )
    snapshot.record_count = len(items)
    snapshot.save()
    return snapshot
