"""Hyperparameter search against the default run on Banking77 (issue 11: "a 20-minute search
must beat the default run"), or on another shared dataset (--dataset).

    .venv/bin/python benchmarks/search.py [--dataset banking77|trec|fpb|sst2] [--minutes 20]
        [--trials N] [--max-train N] [--database-url URL] [--json FILE]

Both contenders go through the console's own services, in this process, exactly as a gpu
worker would run them (``training_run_execute``, then ``search_trial_finished`` after each
trial), on one snapshot:

1. Banking77 (../shared/data/banking77/train.csv, or $LEPTON_SHARED_DATA; --dataset picks
   another shared file) is split as
   benchmarks/quality.py splits it: a stratified 10% **test** split held out first (seed 13,
   near-duplicates on one side, by ``datasets_app.cleaning.assign_splits``), the rest 8:1
   train/validation. The snapshot's test split is that held-out split: runs score it at the end,
   and nothing chooses anything by it (the search ranks trials by validation macro-F1).
2. **Default run**: ``training_run_start`` with no hyperparameters (the defaults the console
   chooses), on the bundled all-MiniLM-L6-v2.
3. **Search**: ``search_start`` with a time budget of --minutes (and --trials if given), the
   default space, one trial at a time (this machine has one "worker"). No trial starts after the
   budget is spent; the trial running then finishes, so the search's wall time can exceed it
   (printed). Its best trial (by validation) is registered; its test scores are compared.

Prints test accuracy and macro-F1 of both, wall times, the search's trials (pruned ones
marked; each finished one with the test accuracy it reached, which chooses nothing), whether
the search beat the default run, and the highest test accuracy of any finished trial: the most
the tried settings reached on this split (a choice by validation cannot do better). Needs
PostgreSQL and the broker of CELERY_BROKER_URL (runs are published there as usual; no worker
needs to listen: this process executes them). The database named by --database-url (default
lepton_bench_search) is created and migrated if missing.

--max-train N caps the train split at N rows (stratified, validation in proportion; the test
split is untouched) and --space narrows the space (JSON over the default space) for a quick
proof that everything runs; such figures are not the target's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("LEPTON_SHARED_DATA") or ROOT.parent / "shared" / "data")
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/lepton_bench_search"
SEED = 13
TEST_FRACTION = 0.1
CONSOLE_RATIOS = (0.8, 0.1, 0.1)
FOLDERS = {  # --dataset: the shared folder (the same names as benchmarks/quality.py)
    "banking77": "banking77",
    "trec": "trec",
    "fpb": "financial_phrasebank",
    "sst2": "sst2",
}


# --- splits (the same as benchmarks/quality.py) ------------------------------------------------
def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["label"] for row in rows]


def _assign(texts, labels, ratios) -> list[str]:
    import pandas as pd

    from datasets_app.cleaning import assign_splits, text_hashes

    frame = pd.DataFrame({"text": texts, "label": labels})
    return assign_splits(
        frame, ratios=ratios, seed=SEED, group_key=text_hashes(frame["text"])
    ).tolist()


def holdout_splits(texts: list[str], labels: list[str]) -> dict[str, list[tuple[str, str]]]:
    first = _assign(texts, labels, (1 - TEST_FRACTION, 0.0, TEST_FRACTION))
    test = [(texts[i], labels[i]) for i, s in enumerate(first) if s == "test"]
    rest = [(texts[i], labels[i]) for i, s in enumerate(first) if s != "test"]
    share = CONSOLE_RATIOS[0] / (CONSOLE_RATIOS[0] + CONSOLE_RATIOS[1])
    second = _assign([t for t, _ in rest], [lab for _, lab in rest], (share, 1 - share, 0.0))
    return {
        "train": [rest[i] for i, s in enumerate(second) if s == "train"],
        "validation": [rest[i] for i, s in enumerate(second) if s == "validation"],
        "test": test,
    }


def stratified_sample(rows: list[tuple[str, str]], size: int) -> list[tuple[str, str]]:
    if size >= len(rows):
        return rows
    rng = random.Random(SEED)
    by_label: dict[str, list[int]] = {}
    for index, (_, label) in enumerate(rows):
        by_label.setdefault(label, []).append(index)
    chosen: list[int] = []
    for _label, indexes in sorted(by_label.items()):
        indexes = list(indexes)
        rng.shuffle(indexes)
        chosen += indexes[: max(2, round(size * len(indexes) / len(rows)))]  # 2: trainable
    return [rows[i] for i in sorted(chosen)]


# --- the console ------------------------------------------------------------------------------
def ensure_database(database_url: str) -> None:
    import psycopg2

    name = database_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")
    import django

    django.setup()


def make_snapshot(splits: dict, *, name: str, user, filename: str = "banking77.csv"):
    from datasets_app.models import Dataset, DatasetJob, Record, Snapshot, SnapshotRecord

    rows = [(text, label, split) for split, items in splits.items() for text, label in items]
    dataset = Dataset.objects.create(
        name=name, source_filename=filename, status=Dataset.Status.READY, created_by=user
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
    counts: dict[str, int] = {}
    for _, _, split in rows:
        counts[split] = counts.get(split, 0) + 1
    snapshot = Snapshot.objects.create(
        dataset=dataset, number=1, record_count=len(rows), split_counts=counts, created_by=user
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


def run_default(*, user, snapshot, base_model) -> dict:
    from training_app.models import TrainingRun
    from training_app.services import training_run_execute, training_run_start

    started = time.perf_counter()
    run = training_run_start(
        user=user, snapshot=snapshot, base_model=base_model, task="single_label"
    )
    training_run_execute(run_id=run.pk)
    run = TrainingRun.objects.get(pk=run.pk)
    return {
        "status": run.status,
        "error": run.error_message,
        "seconds": time.perf_counter() - started,
        "settings": {
            k: run.resolved_params.get(k)
            for k in ("learning_rate", "epochs", "batch_size", "warmup_ratio", "weight_decay")
        },
        "validation": run.best_metrics,
        "test": run.test_metrics,
    }


def run_search(
    *,
    user,
    snapshot,
    base_model,
    minutes: int,
    trials: int | None,
    space: dict | None,
    seed: int | None = None,
) -> dict:
    from training_app.models import HyperparameterSearch, TrainingRun
    from training_app.search import (
        search_advance,
        search_register,
        search_start,
        search_trial_finished,
    )
    from training_app.services import training_run_execute

    started = time.perf_counter()
    search = search_start(
        user=user,
        snapshot=snapshot,
        base_model=base_model,
        task="single_label",
        max_minutes=minutes,
        max_trials=trials,
        parallel_trials=1,
        seed=seed,  # None: the search draws its own sampler seed, as in the console
        space=space,
    )
    while True:
        search.refresh_from_db()
        if search.is_finished:
            break
        if search.status == HyperparameterSearch.Status.REGISTERING:
            # A failed registration attempt is retried by beat; this loop stands in for beat.
            search_register(search_id=search.pk)
            continue
        trial = search.trials.filter(status="queued").order_by("trial_number").first()
        if trial is None:
            search_advance(search_id=search.pk)
            continue
        trial_started = time.perf_counter()
        training_run_execute(run_id=trial.pk)
        search_trial_finished(run_id=trial.pk)
        trial.refresh_from_db()
        print(
            f"  trial {trial.trial_number + 1}: {trial.status}{' (pruned)' if trial.trial_pruned else ''}"
            f" in {time.perf_counter() - trial_started:.0f} s, validation "
            f"{trial.best_metrics.get(search.metric, float('nan')):.4f}, test accuracy "
            f"{(trial.test_metrics or {}).get('accuracy', float('nan')):.4f}, {trial.trial_params}",
            flush=True,
        )
    search = HyperparameterSearch.objects.get(pk=search.pk)
    best = TrainingRun.objects.filter(pk=search.best_trial_id).first()
    rows = list(search.trials.order_by("trial_number"))
    return {
        "status": search.status,
        "message": search.message,
        "seconds": time.perf_counter() - started,
        "trials": len(rows),
        "pruned": sum(1 for t in rows if t.trial_pruned),
        "failed": sum(1 for t in rows if t.status == "failed"),
        "best_settings": best.trial_params if best else {},
        "seed": search.seed,
        "validation": best.best_metrics if best else {},
        "test": best.test_metrics if best else {},
        # Every trial's test scores: they choose nothing; their best is the ceiling seen.
        "trial_tests": [
            {"trial": t.trial_number + 1, "status": t.status, "test": t.test_metrics or {}}
            for t in rows
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(FOLDERS), default="banking77")
    parser.add_argument("--minutes", type=int, default=20, help="the search's time budget")
    parser.add_argument("--trials", type=int, default=None, help="and a trial budget")
    parser.add_argument("--max-train", type=int, default=None, help="cap the train split")
    parser.add_argument(
        "--space",
        type=json.loads,
        default=None,
        help="JSON over the default space, e.g. '{\"epochs\": [1, 2]}' (for a quick proof)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the search's sampler seed (default: a new one, printed, to replay it)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    ensure_database(args.database_url)
    from django.contrib.auth import get_user_model

    from models_app.services import base_model_register_bundled

    texts, labels = read_csv(DATA / FOLDERS[args.dataset] / "train.csv")
    splits = holdout_splits(texts, labels)
    if args.max_train:
        share = len(splits["validation"]) / len(splits["train"])
        splits["validation"] = stratified_sample(
            splits["validation"], max(1, round(args.max_train * share))
        )
        splits["train"] = stratified_sample(splits["train"], args.max_train)
    user, _ = get_user_model().objects.get_or_create(
        username="search-benchmark", defaults={"is_superuser": True, "is_staff": True}
    )
    base_model = base_model_register_bundled()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    snapshot = make_snapshot(
        splits,
        name=f"{args.dataset}-search-bench-{stamp}",
        user=user,
        filename=f"{FOLDERS[args.dataset]}.csv",
    )
    print(
        f"{args.dataset}: {len(splits['train']):,} train, {len(splits['validation']):,} validation, "
        f"{len(splits['test']):,} held-out test rows"
        + (f" (train capped at {args.max_train:,})" if args.max_train else ""),
        flush=True,
    )

    print("Default run ...", flush=True)
    default = run_default(user=user, snapshot=snapshot, base_model=base_model)
    print(
        f"Search ({args.minutes} min budget"
        + (f", {args.trials} trials" if args.trials else "")
        + ") ...",
        flush=True,
    )
    search = run_search(
        user=user,
        snapshot=snapshot,
        base_model=base_model,
        minutes=args.minutes,
        trials=args.trials,
        space=args.space,
        seed=args.seed,
    )

    def line(name: str, figures: dict) -> str:
        test = figures.get("test") or {}
        return (
            f"{name:<12} test accuracy {test.get('accuracy', float('nan')):.4f}  macro-F1 "
            f"{test.get('macro_f1', float('nan')):.4f}  wall {figures['seconds'] / 60:.1f} min"
        )

    print()
    print(line("default run", default), f" settings {default['settings']}")
    print(
        line("search", search),
        f" {search['trials']} trials ({search['pruned']} pruned, {search['failed']} failed)",
    )
    print(f"{'':<12} best trial {search['best_settings']} (sampler seed {search['seed']})")
    print(f"{'':<12} {search['message']}")
    d_test, s_test = default.get("test") or {}, search.get("test") or {}
    if d_test and s_test:
        beats = all(s_test[k] > d_test[k] for k in ("accuracy", "macro_f1"))
        print(
            f"search - default: accuracy {s_test['accuracy'] - d_test['accuracy']:+.4f}, "
            f"macro-F1 {s_test['macro_f1'] - d_test['macro_f1']:+.4f}; wall ratio "
            f"{search['seconds'] / default['seconds']:.2f}x. Search beats the default run: "
            f"{'yes' if beats else 'no'}"
            + (" (capped train split: not the target's figures)" if args.max_train else "")
        )
    reached = [t["test"]["accuracy"] for t in search["trial_tests"] if t["test"].get("accuracy")]
    if reached:
        print(
            f"highest test accuracy of any finished trial {max(reached):.4f} (chooses nothing: "
            "the most the tried settings reached on this split)"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"default": default, "search": search, "args": vars(args)}, default=str)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
