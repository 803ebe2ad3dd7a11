"""A small console with one of everything, for the access matrix (tests/lepton_web/
test_access_matrix.py): every URL parameter of every page and API endpoint names a real row.

Nothing runs a worker or loads a model: the rows are written straight with the ORM, in the
states a user meets after a job has ended.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.core.files.base import ContentFile

from datasets_app.models import (
    BulkLabel,
    Dataset,
    DatasetAssignment,
    DatasetJob,
    Record,
    ReviewItem,
    Snapshot,
)
from lepton_web.models import WorkerCheck
from models_app.models import (
    BaseModel,
    BatchPrediction,
    Deployment,
    MislabeledScan,
    ModelExport,
    ModelVersion,
    PredictionToken,
    RegisteredModel,
)
from tests.factories import UserFactory
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows
from training_app.models import Evaluation, HyperparameterSearch, RetrainLoop, TrainingRun

TOKEN_KEY = "lpt_access-matrix-key-0123456789"


@dataclass
class World:
    users: dict = field(default_factory=dict)
    ids: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)  # the same kinds of rows, of a second dataset
    dataset: Dataset | None = None
    other_dataset: Dataset | None = None


def records_of(dataset: Dataset) -> list[Record]:
    return list(Record.objects.filter(dataset=dataset).order_by("id"))


def _labeled_dataset(name: str, user) -> tuple[Dataset, Snapshot, list[Record]]:
    # Texts name their dataset ("Elsewhere: this is good number 0"), so a page or answer
    # that shows another dataset's record gives itself away.
    rows = [(f"{name}: {text}", label, split) for text, label, split in toy_rows(6)]
    snapshot = make_snapshot(rows, name=name, user=user)
    dataset = snapshot.dataset
    dataset.label_schema = ["negative", "positive"]
    csv = "text,label,split\n" + "".join(
        f"{r.text},{r.label},{r.split}\n" for r in records_of(dataset)
    )
    dataset.source_file.save(f"{name}.csv", ContentFile(csv.encode()), save=False)
    dataset.save()
    return dataset, snapshot, records_of(dataset)


def build_world() -> World:
    world = World()
    users = world.users
    users["analyst"] = UserFactory(username="mx-analyst", role="analyst")
    users["annotator_in"] = UserFactory(username="mx-annotator-in", role="annotator")
    users["annotator_out"] = UserFactory(username="mx-annotator-out", role="annotator")
    users["viewer"] = UserFactory(username="mx-viewer", role="viewer")
    analyst = users["analyst"]

    dataset, snapshot, records = _labeled_dataset("Matrix", analyst)
    other, other_snapshot, other_records = _labeled_dataset("Elsewhere", analyst)
    world.dataset, world.other_dataset = dataset, other
    # Only annotator_in sees "Matrix"; "Elsewhere" goes to a third annotator, so neither
    # matrix annotator sees it.
    DatasetAssignment.objects.create(dataset=dataset, user=users["annotator_in"])
    third = UserFactory(username="mx-annotator-third", role="annotator")
    DatasetAssignment.objects.create(dataset=other, user=third)

    base = BaseModel.objects.create(
        name="mx-base", source=BaseModel.Source.LOCAL, location="/nonexistent/mx-base"
    )
    registered = RegisteredModel.objects.create(name="Matrix-single-label")
    run = TrainingRun.objects.create(
        name="Matrix v1 run",
        snapshot=snapshot,
        base_model=base,
        task="single_label",
        method="full",
        params={},
        label_names=["negative", "positive"],
        created_by=analyst,
        status="succeeded",
        progress=100,
    )
    version = ModelVersion.objects.create(
        registered_model=registered,
        version=1,
        training_run=run,
        snapshot=snapshot,
        base_model=base,
        task="single_label",
        method="full",
        label_names=["negative", "positive"],
        artifact_uri=f"artifacts/mx/{run.pk}",
        artifact_files=[{"path": "config.json", "size_bytes": 2}],
        status=ModelVersion.Status.READY,
    )
    export = ModelExport.objects.create(
        model_version=version, kind=ModelExport.Kind.ONNX_FP32, status="failed", created_by=analyst
    )
    deployment = Deployment.objects.create(
        slug="mx-live", version=version, runtime=Deployment.Runtime.PYTORCH, created_by=analyst
    )
    other_deployment = Deployment.objects.create(
        slug="mx-other", version=version, runtime=Deployment.Runtime.PYTORCH, created_by=analyst
    )
    token = PredictionToken.objects.create(
        name="mx-app",
        key_hash=hashlib.sha256(TOKEN_KEY.encode()).hexdigest(),
        prefix=TOKEN_KEY[:8],
        created_by=analyst,
    )
    token.deployments.add(deployment)
    search = HyperparameterSearch.objects.create(
        name="mx search",
        snapshot=snapshot,
        base_model=base,
        task="single_label",
        space={},
        metric="macro_f1",
        max_trials=2,
        status="failed",
        created_by=analyst,
    )
    evaluation = Evaluation.objects.create(
        model_version=version, snapshot=snapshot, status="failed", created_by=analyst
    )
    batch = BatchPrediction.objects.create(
        model_version=version, source="snapshot", snapshot=snapshot, status="failed"
    )
    bulk = BulkLabel.objects.create(dataset=dataset, label="positive", created_by=analyst)
    item = ReviewItem.objects.create(
        dataset=dataset, record=records[0], reason=ReviewItem.Reason.DISAGREEMENT
    )
    scan = MislabeledScan.objects.create(dataset=dataset, status="failed", created_by=analyst)
    RetrainLoop.objects.create(dataset=dataset, from_version=version, step="failed")
    check = WorkerCheck.objects.create(queue="default", status="succeeded", created_by=analyst)
    dataset_job = DatasetJob.objects.filter(dataset=dataset).first()

    world.ids = {
        "dataset_id": dataset.pk,
        "record_id": records[1].pk,
        "bulk_label_id": bulk.pk,
        "item_id": item.pk,
        "user_id": users["annotator_in"].pk,
        "scan_id": scan.pk,
        "snapshot_id": snapshot.pk,
        "version_id": version.pk,
        "model_id": registered.pk,
        "export_id": export.pk,
        "token_id": token.pk,
        "slug": deployment.slug,
        "action": "stop",
        "batch_id": batch.pk,
        "search_id": search.pk,
        "run_id": run.pk,
        "evaluation_id": evaluation.pk,
        "job_id": check.pk,
        "label": "lepton_web.workercheck",
        "dataset_job_id": dataset_job.pk,
        "other_deployment": other_deployment.slug,
    }
    # Rows of the second dataset, to ask for through the first dataset's addresses (IDOR).
    world.other = {
        "record_id": other_records[0].pk,
        "bulk_label_id": BulkLabel.objects.create(dataset=other, label="positive").pk,
        "item_id": ReviewItem.objects.create(
            dataset=other, record=other_records[0], reason=ReviewItem.Reason.DISAGREEMENT
        ).pk,
        "scan_id": MislabeledScan.objects.create(dataset=other, status="failed").pk,
        "snapshot_id": other_snapshot.pk,
        "dataset_job_id": DatasetJob.objects.filter(dataset=other).first().pk,
        "user_id": third.pk,
    }
    return world
