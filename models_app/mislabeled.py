"""Likely-mislabeled scans: start, cancel and run the job; read its flags.

Here in models_app, not datasets_app, because the scan needs the base-model catalogue (the
default encoder) and the runtime's tokenizer and batching; datasets_app imports neither of the
other apps, while models_app may read datasets. The numbers come from ``label_issues`` (pure)
and ``runtime.embeddings`` (torch). Flags become review items of the dataset (reason
"likely_mislabeled", the suggested label, and a detail naming this scan), written together
with the job's success, so a scan that crashes or is cancelled leaves no half list.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet

from lepton_web.access import access_check
from lepton_web.jobs import ACTIVE_STATUSES, job_create_and_enqueue, job_heartbeat
from models_app import label_issues
from models_app.models import BaseModel, MislabeledScan

logger = logging.getLogger(__name__)

REASON = "likely_mislabeled"
MAX_FOLDS = 10
PROGRESS_EMBEDDED = 80  # embedding is most of the work; folds and writing share the rest
PROGRESS_FITTED = 95
# At most this many labeled records are scanned (a random sample of larger datasets): the
# scan holds every scanned text's embedding and word weights at once. The features are one
# float32 matrix filled as the texts are embedded and the folds fit on it without copies
# (label_issues.FeatureMatrix): 4.5 KB a record at the peak, where holding every embedding, a
# float64 copy and the per-fold copies took 16.5 KB (benchmarks/mislabeled_memory.py, 50,000
# records), so 300,000 records now peak below what 100,000 did.
MAX_SCAN_RECORDS = 300_000
READ_CHUNK = 5_000


class _Stopped(Exception):
    """The scan was cancelled (or taken over) while it ran."""


# --------------------------------------------------------------------------- start, cancel


def _labeled_records(dataset) -> QuerySet:
    from datasets_app.models import Record

    return Record.objects.filter(
        dataset=dataset, import_run_id=dataset.active_import_id, is_excluded=False
    ).exclude(label="")


def _encoder_folder(base_model: BaseModel | None) -> tuple[BaseModel | None, Path]:
    from models_app.services import base_model_register_bundled, bundled_model_path

    if base_model is None:
        base_model = BaseModel.objects.filter(is_default=True).first()
    if base_model is None:
        base_model = base_model_register_bundled()
    if base_model.source == BaseModel.Source.HUB:
        raise ValidationError(
            {
                "base_model": f"{base_model} is a Hugging Face Hub id; scans run offline from a "
                "folder on the server. Choose a bundled or local base model."
            }
        )
    folder = Path(base_model.location)
    if not (folder / "config.json").is_file():
        if base_model.source == BaseModel.Source.BUNDLED:
            return base_model, bundled_model_path()
        raise ValidationError(
            {"base_model": f"The folder of {base_model} ({folder}) has no config.json."}
        )
    return base_model, folder


def mislabeled_scan_start(
    *,
    user,
    dataset,
    base_model: BaseModel | None = None,
    folds: int = label_issues.DEFAULT_FOLDS,
    seed: int = 0,
) -> MislabeledScan:
    """Queue a scan of the dataset's labeled records (the default base model encodes them)."""
    access_check(user, "dataset", "change")
    if not dataset.is_ready:
        raise ValidationError("This dataset has no imported records yet; import it first.")
    if dataset.label_multiple:
        raise ValidationError(
            "This dataset allows several labels per record; the likely-mislabeled scan judges "
            "one label per record only."
        )
    if not 2 <= folds <= MAX_FOLDS:
        raise ValidationError({"folds": f"Folds must be a whole number from 2 to {MAX_FOLDS}."})
    if dataset.mislabeled_scans.filter(status__in=ACTIVE_STATUSES).exists():
        raise ValidationError(
            "A scan of this dataset is already queued or running. Wait for it, or cancel it."
        )
    counts = dict(
        _labeled_records(dataset).values_list("label").annotate(count=Count("id")).order_by()
    )
    kept, _dropped = label_issues.scannable_classes(counts)
    kept_count = sum(counts[label] for label in kept)
    try:
        label_issues.check_scannable([counts[label] for label in kept])
    except label_issues.ScanRefused as refused:
        raise ValidationError(str(refused)) from None
    base_model, _folder = _encoder_folder(base_model)
    # BrokerUnavailable (nothing saved) reaches the caller: the API answers 503, pages say so.
    return job_create_and_enqueue(
        model=MislabeledScan,
        dataset=dataset,
        base_model=base_model,
        folds=folds,
        seed=seed,
        filter_by=label_issues.DEFAULT_FILTER,
        records_total=min(kept_count, MAX_SCAN_RECORDS),
        created_by=user,
    )


def mislabeled_scan_cancel(*, user, scan: MislabeledScan) -> MislabeledScan:
    access_check(user, "dataset", "change")
    if not scan.cancel():
        raise ValidationError("This scan has already finished.")
    return scan


# --------------------------------------------------------------------------- the job


def mislabeled_scan_execute(*, scan_id: int) -> None:
    """Run a queued scan (the worker's task); safe to call twice."""
    from models_app.runtime import ArtifactError

    scan = MislabeledScan.objects.select_related("dataset", "base_model").get(pk=scan_id)
    if not scan.claim():
        return  # another worker took it, or it was cancelled
    try:
        with job_heartbeat(scan) as should_stop:
            _execute(scan, should_stop)
    except _Stopped:
        return
    except ArtifactError as error:
        scan.fail(error=str(error))
    except (ValidationError, label_issues.ScanRefused) as error:
        messages = getattr(error, "messages", None) or [str(error)]
        scan.fail(error=" ".join(messages))
    except Exception:
        logger.exception("Likely-mislabeled scan %s failed", scan.pk)
        scan.fail(
            error="The scan stopped on an unexpected error; it is logged for the administrators. "
            "Nothing was flagged. Try again, or tell them if it happens again."
        )
        raise


def _execute(scan: MislabeledScan, should_stop: Callable[[], bool]) -> None:
    from models_app.runtime.embeddings import EmbeddingStopped, SentenceEncoder

    dataset = scan.dataset
    timings: dict[str, float] = {}
    started = time.perf_counter()
    rows, labeled_total = _read(dataset, seed=scan.seed)
    counts = Counter(label for _, _, label in rows)
    kept, dropped = label_issues.scannable_classes(counts)
    index = {name: number for number, name in enumerate(kept)}
    rows = [row for row in rows if row[2] in index]
    labels = [index[label] for _, _, label in rows]
    label_issues.check_scannable([counts[name] for name in kept])
    MislabeledScan.objects.filter(pk=scan.pk).update(records_total=len(rows))
    _report(scan, 1, f"Loading the encoder to read {len(rows):,} labeled records.")
    _, folder = _encoder_folder(scan.base_model)
    encoder = SentenceEncoder(folder)
    timings["read_and_load_seconds"] = time.perf_counter() - started

    step = time.perf_counter()
    last_report = [0.0]
    texts = [text for _, text, _ in rows]

    def embedded(done: int) -> bool:
        if should_stop():
            return False
        now = time.monotonic()
        if now - last_report[0] >= 2 or done == len(rows):
            last_report[0] = now
            progress = 1 + (PROGRESS_EMBEDDED - 1) * done // max(1, len(rows))
            MislabeledScan.objects.filter(pk=scan.pk).update(records_done=done)
            return _report(scan, progress, f"Encoded {done:,} of {len(rows):,} records.")
        return True

    def embed(chunk: list[str], offset: int):
        return encoder.embed(chunk, progress=lambda done: embedded(offset + done))

    # The embeddings go into the feature matrix a chunk at a time (label_issues.FeatureMatrix):
    # no array of every embedding, no float64 or intermediate copy of them.
    try:
        features = label_issues.text_features_streamed(
            texts, dimensions=encoder.dimensions, embed=embed
        )
    except EmbeddingStopped:
        raise _Stopped from None
    del texts
    timings["embedding_seconds"] = time.perf_counter() - step

    step = time.perf_counter()

    def fitted(done: int, total: int) -> None:
        if should_stop():
            raise _Stopped
        progress = PROGRESS_EMBEDDED + (PROGRESS_FITTED - PROGRESS_EMBEDDED) * done // total
        _report(scan, progress, f"Cross-validated {done} of {total} folds.")

    probabilities = label_issues.out_of_fold_probabilities(
        features, labels, class_count=len(kept), folds=scan.folds, seed=scan.seed, on_fold=fitted
    )
    issues = label_issues.find_issues(probabilities, labels, filter_by=scan.filter_by)
    baseline = label_issues.disagreements(probabilities, labels)
    timings["fitting_seconds"] = time.perf_counter() - step
    if should_stop():
        raise _Stopped
    accuracy = float((probabilities.argmax(axis=1) == labels).mean()) if labels else 0.0
    summary = {
        "records": len(rows),
        "records_labeled": labeled_total,
        "sampled": labeled_total > MAX_SCAN_RECORDS,
        "labels": kept,
        "labels_left_out": dropped,
        "out_of_fold_accuracy": round(accuracy, 4),
        "baseline_flagged": len(baseline),
        "encoder": str(scan.base_model or folder.name),
        **{name: round(value, 2) for name, value in timings.items()},
    }
    _report(scan, PROGRESS_FITTED, f"Putting {len(issues):,} flagged records up for review.")
    _store(scan, rows, kept, issues, summary)


def _read(dataset, *, seed: int) -> tuple[list[tuple[int, str, str]], int]:
    """(record id, text, label) of the labeled records, or of a random MAX_SCAN_RECORDS of
    them (memory: the features of every scanned text are held at once), and how many there
    are in all. Texts are read in chunks for the chosen ids only."""
    from datasets_app.models import Record

    pairs = list(_labeled_records(dataset).order_by("id").values_list("id", "label"))
    total = len(pairs)
    if total > MAX_SCAN_RECORDS:
        pairs = sorted(random.Random(seed).sample(pairs, MAX_SCAN_RECORDS))  # noqa: S311
    texts: dict[int, str] = {}
    for start in range(0, len(pairs), READ_CHUNK):
        chunk = [record_id for record_id, _ in pairs[start : start + READ_CHUNK]]
        texts.update(Record.objects.filter(pk__in=chunk).values_list("id", "text"))
    return [(record_id, texts[record_id], label) for record_id, label in pairs], total


def _report(scan: MislabeledScan, progress: int, message: str) -> bool:
    if not scan.report(progress=progress, message=message):
        raise _Stopped
    return True


def _store(
    scan: MislabeledScan,
    rows: list[tuple[int, str, str]],
    kept: list[str],
    issues: list[label_issues.LabelIssue],
    summary: dict,
) -> None:
    from datasets_app.models import Record
    from datasets_app.services.labeling import review_item_add

    # A record relabeled or excluded while the scan ran was judged on a label it no longer has.
    current = dict(
        Record.objects.filter(
            pk__in=[rows[issue.index][0] for issue in issues], is_excluded=False
        ).values_list("id", "label")
    )
    issues = [
        issue for issue in issues if current.get(rows[issue.index][0]) == rows[issue.index][2]
    ]
    with transaction.atomic():
        for rank, issue in enumerate(issues, start=1):
            record_id, _text, given = rows[issue.index]
            review_item_add(
                dataset=scan.dataset,
                record_id=record_id,
                reason=REASON,
                suggested_label=kept[issue.suggested],
                detail={
                    "scan": scan.pk,
                    "rank": rank,
                    "given_label": given,
                    "given_probability": round(issue.given_probability, 4),
                    "suggested_probability": round(issue.suggested_probability, 4),
                    "score": round(issue.score, 4),
                },
                user=scan.created_by,
            )
        flagged = len(issues)
        MislabeledScan.objects.filter(pk=scan.pk).update(
            summary=summary, flagged_count=flagged, records_done=len(rows)
        )
        noun = "record" if flagged == 1 else "records"
        if not scan.succeed(
            message=f"Flagged {flagged:,} of {len(rows):,} {noun} as likely mislabeled."
        ):
            raise _Stopped  # cancelled at the last moment: rolled back, nothing flagged


# --------------------------------------------------------------------------- reading


def mislabeled_scans_for_dataset(*, dataset, limit: int = 5) -> list[MislabeledScan]:
    return list(dataset.mislabeled_scans.select_related("base_model", "created_by")[:limit])


def mislabeled_scan_get(*, dataset, scan_id: int) -> MislabeledScan:
    from django.http import Http404

    scan = dataset.mislabeled_scans.filter(pk=scan_id).first()
    if scan is None:
        raise Http404("This scan does not exist, or belongs to another dataset.")
    return scan


def mislabeled_flags(*, scan: MislabeledScan, limit: int = 200) -> list[dict]:
    """The scan's flags, most likely wrong first: record, given and suggested label, scores,
    and where review stands (open, resolved with a label, or dismissed)."""
    from datasets_app.models import Record, ReviewItem

    items = list(
        ReviewItem.objects.filter(dataset=scan.dataset, reason=REASON, detail__scan=scan.pk)
        .order_by("detail__rank")
        .values("id", "record_id", "suggested_label", "detail", "status", "resolved_label")[:limit]
    )
    texts = dict(
        Record.objects.filter(pk__in=[item["record_id"] for item in items]).values_list(
            "id", "text"
        )
    )
    return [
        {
            "review_item_id": item["id"],
            "record_id": item["record_id"],
            "text": texts.get(item["record_id"], ""),
            "given_label": item["detail"].get("given_label", ""),
            "suggested_label": item["suggested_label"],
            "given_probability": item["detail"].get("given_probability"),
            "suggested_probability": item["detail"].get("suggested_probability"),
            "score": item["detail"].get("score"),
            "rank": item["detail"].get("rank"),
            "status": item["status"],
            "resolved_label": item["resolved_label"],
        }
        for item in items
    ]
