"""A dataset being labeled, and a version trained on it, for the retrain-on-new-labels tests."""

from models_app.models import BaseModel
from tests.models_app.serving_helpers import store_version
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows

UNLABELED = 6


def labeled_dataset_with_version(folder, *, user, name: str = "reviews"):
    """A dataset (24 labeled records in three splits, UNLABELED without a label) and a ready
    version trained on its first snapshot."""
    rows = toy_rows(12) + [(f"this is maybe {i}", "", "train") for i in range(UNLABELED)]
    snapshot = make_snapshot(rows, name=name, user=user)
    base = BaseModel.objects.create(name=f"tiny-{name}", source="local", location=str(folder))
    version = store_version(
        folder, model_name=f"{name}-model", task="single_label", labels=("negative", "positive")
    )
    version.snapshot, version.base_model = snapshot, base
    version.hyperparameters = {"epochs": 1, "batch_size": 8, "max_length": 16}
    version.save()
    return snapshot.dataset, version
