"""Build snapshots straight from rows, for training tests that do not exercise the import."""

from datasets_app.models import Dataset, DatasetJob, Record, Snapshot, SnapshotRecord


def make_snapshot(rows: list[tuple[str, str, str]], *, name: str = "toy", user=None) -> Snapshot:
    """rows: (text, label, split). Creates the dataset, its records and snapshot v1."""
    dataset = Dataset.objects.create(
        name=name, source_filename=f"{name}.csv", status=Dataset.Status.READY, created_by=user
    )
    job = DatasetJob.objects.create(
        dataset=dataset, kind="import", status="succeeded", progress=100
    )
    dataset.active_import = job
    dataset.save()
    records = Record.objects.bulk_create(
        Record(dataset=dataset, import_run=job, source_row=i + 1, text=t, label=lab, split=s)
        for i, (t, lab, s) in enumerate(rows)
    )
    number = dataset.snapshots.count() + 1
    split_counts: dict[str, int] = {}
    for _, _, split in rows:
        split_counts[split] = split_counts.get(split, 0) + 1
    snapshot = Snapshot.objects.create(
        dataset=dataset, number=number, record_count=len(rows), split_counts=split_counts
    )
    SnapshotRecord.objects.bulk_create(
        SnapshotRecord(
            snapshot=snapshot,
            record_id=r.id,
            source_row=r.source_row,
            text=r.text,
            label=r.label,
            split=r.split,
        )
        for r in records
    )
    return snapshot


def toy_rows(n_per_class: int = 12) -> list[tuple[str, str, str]]:
    """A learnable toy task: 'good' texts are positive, 'bad' texts negative."""
    rows = []
    for i in range(n_per_class):
        split = "train" if i < n_per_class * 2 // 3 else ("validation" if i % 2 else "test")
        rows.append((f"this is good number {i}", "positive", split))
        rows.append((f"this is bad number {i}", "negative", split))
    return rows


def numbered_toy_rows(count: int) -> list[tuple[str, str, str]]:
    """``count`` rows alternating 'bad' (negative) and 'good' (positive), split 8:1:1."""
    rows = []
    for i in range(count):
        split = "train" if i % 10 < 8 else ("validation" if i % 10 == 8 else "test")
        word, label = ("good", "positive") if i % 2 else ("bad", "negative")
        rows.append((f"this movie is {word} number {i}", label, split))
    return rows
