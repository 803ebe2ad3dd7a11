"""Fixtures for the training pages: a tiny BERT base model, snapshots made with the ORM, and run
rows in any state. Also imported by tests/browser/test_training.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from datasets_app.models import Snapshot, SnapshotRecord
from models_app.models import BaseModel, ModelVersion, RegisteredModel
from tests.datasets_app.factories import DatasetFactory
from training_app.models import TrainingEvent, TrainingMetric, TrainingRun

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ["the", "a", "movie", "film", "plot", "acting", "was", "is", "very", "story", "scene"]
WORDS = {"positive": ["good", "great"], "negative": ["bad", "awful"], "neutral": ["okay", "fine"]}


class MachineLost(BaseException):
    """Nothing after it runs on that machine, as after a power cut."""


def lose_the_worker_after_the_first_checkpoint(run: TrainingRun, monkeypatch) -> int:
    """Execute ``run`` until its first checkpoint is saved, then lose the machine; returns the
    checkpoint's step. The run row stays "running", as the sweeper later finds it."""
    from training_app.services import RunCallbacks, training_run_execute

    saved = RunCallbacks.on_checkpoint

    def lost(self, *, step, path):
        saved(self, step=step, path=path)
        raise MachineLost

    monkeypatch.setattr(RunCallbacks, "on_checkpoint", lost)
    with pytest.raises(MachineLost):
        training_run_execute(run_id=run.pk)
    monkeypatch.setattr(RunCallbacks, "on_checkpoint", saved)
    run.refresh_from_db()
    assert run.status == "running"
    return run.checkpoint_step


def save_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT with a WordPiece vocabulary of the toy words, saved as a HF folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = SPECIAL + FILLER + [w for group in WORDS.values() for w in group]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def register_tiny_base_model(folder: Path, *, name: str = "tiny-bert") -> BaseModel:
    return BaseModel.objects.create(
        name=name,
        source=BaseModel.Source.LOCAL,
        location=str(folder),
        architecture="BertModel",
        parameter_count=60_000,
        is_default=True,
    )


@pytest.fixture
def tiny_base_model(db, tiny_bert_dir) -> BaseModel:
    return register_tiny_base_model(tiny_bert_dir)


def sentiment_rows(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    rows = []
    for index in range(count):
        label = ("positive", "negative", "neutral")[index % 3]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(WORDS[label]))
        rows.append((" ".join(words), label))
    return rows


def make_snapshot(
    *,
    user=None,
    name: str = "Reviews",
    train: int = 60,
    validation: int = 15,
    test: int = 15,
    labels: bool = True,
    dataset=None,
    relabel: dict[str, str] | None = None,
) -> Snapshot:
    """A dataset with a snapshot of toy sentiment records, written straight with the ORM.

    ``relabel`` maps labels to others (e.g. numbers for regression) before they are written:
    snapshot records cannot be changed afterwards."""
    dataset = dataset or DatasetFactory(name=name, **({"created_by": user} if user else {}))
    number = dataset.snapshots.count() + 1
    snapshot = Snapshot.objects.create(dataset=dataset, number=number, created_by=user)
    records = []
    for split, count, seed in (
        ("train", train, 1),
        ("validation", validation, 2),
        ("test", test, 3),
    ):
        for text, label in sentiment_rows(count, seed):
            records.append(
                SnapshotRecord(
                    snapshot=snapshot,
                    record_id=len(records) + 1,
                    source_row=len(records) + 2,
                    text=text,
                    label=(relabel or {}).get(label, label) if labels else "",
                    split=split,
                )
            )
    SnapshotRecord.objects.bulk_create(records)
    label_counts: dict[str, int] = {}
    split_counts: dict[str, int] = {}
    for record in records:
        label_counts[record.label] = label_counts.get(record.label, 0) + 1
        split_counts[record.split] = split_counts.get(record.split, 0) + 1
    snapshot.record_count = len(records)
    snapshot.label_counts = label_counts
    snapshot.split_counts = split_counts
    snapshot.save()
    return snapshot


@pytest.fixture
def snapshot(analyst) -> Snapshot:
    return make_snapshot(user=analyst)


TEST_REPORT = {
    "accuracy": 0.8,
    "macro_f1": 0.75,
    "labels": ["negative", "neutral", "positive"],
    "confusion_matrix": [[4, 1, 0], [2, 2, 1], [0, 0, 5]],
    "per_class": {
        "negative": {"precision": 0.6667, "recall": 0.8, "f1": 0.7273, "support": 5},
        "neutral": {"precision": 0.6667, "recall": 0.4, "f1": 0.5, "support": 5},
        "positive": {"precision": 0.8333, "recall": 1.0, "f1": 0.9091, "support": 5},
    },
}
WORST = [
    {"text": "the plot was okay", "label": "neutral", "predicted": "negative", "loss": 2.3456},
    {"text": "a fine film", "label": "neutral", "predicted": "positive", "loss": 1.5},
]


@pytest.fixture
def make_run(analyst, tiny_base_model, snapshot):
    """A TrainingRun row in any state (no worker involved)."""

    def make(**fields) -> TrainingRun:
        values = {
            "name": "Reviews v1 · tiny-bert · full",
            "snapshot": snapshot,
            "base_model": tiny_base_model,
            "task": "single_label",
            "method": "full",
            "params": {"epochs": 3, "batch_size": 32, "learning_rate": None, "seed": 42},
            "label_names": ["negative", "neutral", "positive"],
            "created_by": analyst,
            **fields,
        }
        return TrainingRun.objects.create(**values)

    return make


@pytest.fixture
def running_run(make_run) -> TrainingRun:
    run = make_run(
        status="running",
        progress=40,
        message="Step 8 of 20, loss 0.9000.",
        steps_done=8,
        total_steps=20,
        examples_per_second=123.4,
        seconds_left=17,
    )
    for step, loss in ((1, 1.1), (5, 1.0), (8, 0.9)):
        TrainingMetric.objects.create(
            run=run, step=step, epoch=step / 10, name="train_loss", value=loss
        )
    TrainingMetric.objects.create(run=run, step=7, epoch=1, name="val_macro_f1", value=0.5)
    TrainingEvent.objects.create(run=run, kind="started", message="Started.")
    TrainingEvent.objects.create(run=run, kind="evaluated", message="Step 7: macro_f1 0.5000")
    return run


@pytest.fixture
def finished_run(make_run) -> TrainingRun:
    run = make_run(
        status="succeeded",
        progress=100,
        message="Finished in 12 s.",
        steps_done=20,
        total_steps=20,
        best_step=20,
        best_metrics={"loss": 0.6, "accuracy": 0.8, "macro_f1": 0.74},
        test_metrics={"loss": 0.55, "accuracy": 0.8, "macro_f1": 0.75},
        test_report=TEST_REPORT,
        worst_examples=WORST,
        params={"epochs": 2, "batch_size": 8, "learning_rate": None, "seed": 42},
    )
    TrainingEvent.objects.create(run=run, kind="started", message="Started.")
    TrainingEvent.objects.create(run=run, kind="succeeded", message="Registered Reviews v1.")
    return run


@pytest.fixture
def model_version(finished_run) -> ModelVersion:
    registered = RegisteredModel.objects.create(name="Reviews")
    return ModelVersion.objects.create(
        registered_model=registered,
        version=1,
        training_run=finished_run,
        snapshot=finished_run.snapshot,
        base_model=finished_run.base_model,
        task="single_label",
        method="full",
        label_names=["negative", "neutral", "positive"],
        hyperparameters=finished_run.params,
        test_metrics=finished_run.test_metrics,
        artifact_uri=f"artifacts/runs/{finished_run.pk}",
        artifact_files=[{"path": "config.json", "size_bytes": 512}],
        status=ModelVersion.Status.READY,
    )
