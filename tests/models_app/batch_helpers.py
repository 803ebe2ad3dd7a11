"""A READY version of the toy classifier in media storage, and a snapshot of real records."""

from __future__ import annotations

from pathlib import Path

from datasets_app.models import Snapshot, SnapshotRecord
from models_app.models import ModelVersion
from tests.datasets_app.factories import DatasetFactory, RecordFactory
from tests.models_app.serving_helpers import store_version
from tests.models_app.toy_classifier import LABELS, save_toy_classifier, toy_rows

_TOY: dict[str, Path] = {}


def toy_version(tmp_path_factory, *, model_name: str = "toy-sentiment") -> ModelVersion:
    """The toy classifier ("good"/"great" -> positive), trained once per test session."""
    folder = _TOY.get("folder")
    if folder is None or not folder.is_dir():
        folder = save_toy_classifier(tmp_path_factory.getbasetemp() / "toy-classifier-batch")
        _TOY["folder"] = folder
    return store_version(folder, model_name=model_name, task="single_label", labels=LABELS)


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
