"""params.register: a run registers a model version by default (with its model card and
validation metrics), and registers nothing when told register=false."""

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from models_app.models import ModelVersion
from models_app.services import base_model_register_bundled
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows
from training_app.models import TrainingRun
from training_app.services import training_run_execute, training_run_start

FAST = {"epochs": 1, "batch_size": 8, "max_length": 16, "seed": 42}


def test_register_must_be_true_or_false(analyst, db):
    with pytest.raises(ValidationError) as caught:
        training_run_start(
            user=analyst,
            snapshot=make_snapshot(toy_rows()),
            base_model=base_model_register_bundled(),
            task="single_label",
            params={"register": "no"},
        )

    assert caught.value.message_dict == {"params": ["register must be true or false."]}
    assert not TrainingRun.objects.exists()


def test_run_with_register_false_finishes_without_a_version(make_run):
    run = make_run(status="queued", params={**FAST, "register": False})

    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    assert "not registered (register=false)" in run.message
    assert not ModelVersion.objects.exists()


def test_run_registers_by_default_with_a_model_card_and_validation_metrics(make_run):
    run = make_run(status="queued", params=FAST)

    training_run_execute(run_id=run.pk)

    version = ModelVersion.objects.get(training_run=run)
    assert set(version.validation_metrics) >= {"macro_f1", "accuracy", "loss"}
    assert "README.md" in [item["path"] for item in version.artifact_files]
    with default_storage.open(f"{version.artifact_uri}/README.md") as handle:
        assert handle.read().decode().startswith(f"# {version.registered_model.name} v1\n")
