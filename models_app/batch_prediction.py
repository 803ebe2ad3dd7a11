"""Batch prediction: a model version over a snapshot's split or an uploaded file, as a job.

The job reads its rows (snapshot records, or the file through the same forgiving reader as
dataset imports), predicts them in chunks with the serving runtime, writes a CSV or JSON Lines
file (formula-escaped like dataset exports) with each row's prediction, the score of every
class and the given label where there is one, sums up accuracy and macro-F1 for labelled rows,
and can store the predictions on the dataset's records as suggestions for the labeling queue.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import FileResponse, Http404

from lepton_web.access import access_check
from lepton_web.jobs import job_create_and_enqueue, job_heartbeat
from models_app.models import BatchPrediction, ModelVersion

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CHUNK_ROWS = 256  # texts predicted between progress reports (and cancel checks)
MAX_UPLOAD_BYTES = 200 * 1024**2
MAX_ROWS = 1_000_000


@dataclass
class InputRow:
    row: int  # snapshot: record's source row; file: 1-based data row
    text: str
    label: str
    record_id: int | None = None


# --------------------------------------------------------------------------- start, cancel


def batch_prediction_start(
    *,
    user,
    version: ModelVersion,
    snapshot=None,
    split: str = "",
    upload=None,
    text_column: str = "",
    label_column: str = "",
    output_format: str = BatchPrediction.Format.CSV,
    store_suggestions: bool = False,
) -> BatchPrediction:
    """Queue a batch prediction of ``version`` over ``snapshot`` (one split, or all) or over an
    uploaded file; the file is saved as it is and read by the job."""
    from datasets_app.models import SnapshotRecord

    access_check(user, "model_version", "create")
    if version.status != ModelVersion.Status.READY:
        raise ValidationError({"version": f"{version} is not ready, so it cannot predict yet."})
    if output_format not in BatchPrediction.Format.values:
        raise ValidationError({"output_format": "The output format must be csv or jsonl."})
    if (snapshot is None) == (upload is None):
        raise ValidationError({"source": "Choose a snapshot or upload a file, not both."})
    fields: dict = {}
    if snapshot is not None:
        if split and split not in SPLITS:
            raise ValidationError({"split": f"The split must be one of {', '.join(SPLITS)}."})
        records = SnapshotRecord.objects.filter(snapshot=snapshot)
        if split:
            records = records.filter(split=split)
        count = records.count()
        if not count:
            where = f"the {split} split of " if split else ""
            raise ValidationError({"split": f"There are no records in {where}{snapshot}."})
        fields = {
            "source": BatchPrediction.Source.SNAPSHOT,
            "snapshot": snapshot,
            "split": split,
            "rows_total": count,
        }
    else:
        if store_suggestions:
            message = "Suggestions are stored on a dataset's records; predict a snapshot for them."
            raise ValidationError({"store_suggestions": message})
        if upload.size == 0:
            raise ValidationError({"file": "The file is empty."})
        if upload.size > MAX_UPLOAD_BYTES:
            size_mb = math.ceil(upload.size / 1024**2)
            limit_mb = MAX_UPLOAD_BYTES // 1024**2
            message = f"Files can be up to {limit_mb} MB; this one is {size_mb} MB."
            raise ValidationError({"file": message})
        fields = {
            "source": BatchPrediction.Source.UPLOAD,
            "input_file": upload,
            "input_filename": Path(upload.name).name[:255],
            "text_column": text_column.strip(),
            "label_column": label_column.strip(),
        }
    if store_suggestions and version.task == "regression":
        raise ValidationError(
            {"store_suggestions": "A regression model's values cannot be label suggestions."}
        )
    # BrokerUnavailable (nothing saved) reaches the caller: the API answers 503, pages say so.
    return job_create_and_enqueue(
        model=BatchPrediction,
        model_version=version,
        output_format=output_format,
        store_suggestions=store_suggestions,
        created_by=user,
        **fields,
    )


def batch_prediction_cancel(*, user, batch: BatchPrediction) -> BatchPrediction:
    access_check(user, "model_version", "create")
    if not batch.cancel():
        raise ValidationError("This batch prediction has already finished.")
    return batch


# --------------------------------------------------------------------------- the job


class _Stopped(Exception):
    """The job was cancelled (or taken over) while it ran."""


def batch_prediction_execute(*, batch_id: int) -> None:
    """Run a queued batch prediction (the worker's task); safe to call twice."""
    from datasets_app.csv_io import ImportProblem
    from models_app.runtime import ArtifactError

    batch = BatchPrediction.objects.select_related("model_version", "snapshot").get(pk=batch_id)
    if not batch.claim():
        return  # another worker took it, or it was cancelled
    try:
        with job_heartbeat(batch) as should_stop:
            _execute(batch, should_stop)
    except _Stopped:
        return
    except (ImportProblem, ArtifactError) as error:
        batch.fail(error=str(getattr(error, "message", error)))
    except ValidationError as error:
        batch.fail(error=" ".join(error.messages))
    except Exception:
        logger.exception("Batch prediction %s failed", batch.pk)
        batch.fail(
            error="The batch prediction stopped on an unexpected error; it is logged for the "
            "administrators. Try again, or tell them if it happens again."
        )
        raise


def _execute(batch: BatchPrediction, should_stop) -> None:
    from models_app import runtime
    from models_app.services import model_version_local_dir

    version = batch.model_version
    with tempfile.TemporaryDirectory() as work:
        rows = _read_rows(batch, Path(work))
        if not rows:
            raise ValidationError("There are no texts to predict in the input.")
        if len(rows) > MAX_ROWS:
            raise ValidationError(
                f"A batch can hold up to {MAX_ROWS:,} rows; this input has {len(rows):,}."
            )
        BatchPrediction.objects.filter(pk=batch.pk).update(rows_total=len(rows))
        _report(batch, progress=1, message=f"Loading {version} to predict {len(rows):,} rows.")
        with model_version_local_dir(version) as folder:
            predictor = runtime.load_predictor(
                folder,
                runtime="pytorch",
                task=version.task or None,
                threads=runtime.engines.thread_count(),
            )
            results: list[dict] = []
            for start in range(0, len(rows), CHUNK_ROWS):
                if should_stop():
                    raise _Stopped
                chunk = rows[start : start + CHUNK_ROWS]
                results.extend(predictor.predict([row.text for row in chunk]))
                done = start + len(chunk)
                BatchPrediction.objects.filter(pk=batch.pk).update(rows_done=done)
                _report(
                    batch,
                    progress=1 + int(94 * done / len(rows)),
                    message=f"Predicted {done:,} of {len(rows):,} rows.",
                )
        task = predictor.task
        names = predictor.label_names
        output = Path(work) / f"predictions-{batch.pk}.{batch.output_format}"
        _write_output(output, batch.output_format, rows, results, task=task, names=names)
        summary = prediction_summary(rows, results, task=task, names=names)
        name = f"predictions/{batch.pk}/{output.name}"
        if default_storage.exists(name):  # a rerun overwrites
            default_storage.delete(name)
        with output.open("rb") as handle:
            stored_name = default_storage.save(name, File(handle, name=output.name))
    suggestions = None
    if batch.store_suggestions and batch.snapshot is not None:
        _report(batch, progress=97, message="Storing the predictions as suggestions.")
        suggestions = _store_suggestions(batch, rows, results, task=task)
    BatchPrediction.objects.filter(pk=batch.pk).update(
        output_file=stored_name, summary=summary, suggestions_stored=suggestions
    )
    message = f"Predicted {len(rows):,} rows."
    if suggestions is not None:
        message += f" Stored {suggestions:,} suggestions on the dataset's records."
    if not batch.succeed(message=message):
        raise _Stopped


def _report(batch: BatchPrediction, *, progress: int, message: str) -> None:
    if not batch.report(progress=progress, message=message):
        raise _Stopped


def _read_rows(batch: BatchPrediction, work: Path) -> list[InputRow]:
    if batch.source == BatchPrediction.Source.SNAPSHOT:
        return _snapshot_rows(batch)
    return _file_rows(batch, work)


def _snapshot_rows(batch: BatchPrediction) -> list[InputRow]:
    from datasets_app.models import SnapshotRecord

    if batch.snapshot is None:
        raise ValidationError("The snapshot of this batch prediction was deleted.")
    records = SnapshotRecord.objects.filter(snapshot=batch.snapshot)
    if batch.split:
        records = records.filter(split=batch.split)
    return [
        InputRow(row=source_row, text=text, label=label, record_id=record_id)
        for record_id, source_row, text, label in records.order_by("id").values_list(
            "record_id", "source_row", "text", "label"
        )
    ]


def _file_rows(batch: BatchPrediction, work: Path) -> list[InputRow]:
    """The uploaded file read like a dataset import: encoding, delimiter, quoting and header
    detected, JSON Lines and gzip accepted, bad rows named by line."""
    from datasets_app.csv_io import (
        ColumnMapping,
        ImportProblem,
        detect,
        iter_records,
        suggest_mapping,
    )

    path = work / "input"
    with batch.input_file.open("rb") as source, path.open("wb") as out:
        for block in source.chunks():
            out.write(block)
    detection = detect(path, filename=batch.input_filename)
    guess = suggest_mapping(detection.columns)
    text_column = batch.text_column or guess.text_columns[0]
    label_column = batch.label_column or guess.label_column
    if label_column == text_column:
        label_column = None
    # validate() names a missing column and lists the file's columns.
    mapping = ColumnMapping(text_columns=[text_column], label_column=label_column)
    rows: list[InputRow] = []
    problems: list[str] = []
    for chunk in iter_records(path, detection, mapping):
        problems.extend(problem.message for problem in chunk.problems)
        frame = chunk.frame
        labels = frame["label"] if "label" in frame else [""] * len(frame)
        for source_row, text, label in zip(frame["source_row"], frame["text"], labels, strict=True):
            rows.append(InputRow(row=int(source_row), text=str(text), label=_text(label)))
        if len(rows) > MAX_ROWS:
            break
    if problems and not rows:
        raise ImportProblem(" ".join(problems[:20]))
    return [row for row in rows if row.text.strip()]


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


# --------------------------------------------------------------------------- output


def _prediction_text(result: dict) -> str:
    if "label" in result:
        return result["label"]
    if "labels" in result:
        return "|".join(result["labels"])
    value = result.get("value")
    return "" if value is None else repr(float(value))


def _write_output(
    path: Path,
    output_format: str,
    rows: list[InputRow],
    results: list[dict],
    *,
    task: str,
    names: list[str],
) -> None:
    from datasets_app.cleaning import spreadsheet_safe

    has_records = any(row.record_id is not None for row in rows)
    if output_format == BatchPrediction.Format.JSONL:
        with path.open("w", encoding="utf-8") as out:
            for row, result in zip(rows, results, strict=True):
                item = {"row": row.row}
                if has_records:
                    item["record_id"] = row.record_id
                item |= {"text": row.text, "label": row.label or None, **_json_result(result)}
                out.write(json.dumps(item, ensure_ascii=False) + "\n")
        return
    header = ["row", *(["record_id"] if has_records else []), "text", "label", "prediction"]
    if task != "regression":
        header += ["score", *[f"score:{name}" for name in names]]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([spreadsheet_safe(cell) for cell in header])
        for row, result in zip(rows, results, strict=True):
            cells = [row.row, *([row.record_id] if has_records else [])]
            cells += [spreadsheet_safe(row.text), spreadsheet_safe(row.label)]
            cells.append(spreadsheet_safe(_prediction_text(result)))
            if task != "regression":
                scores = result["scores"]
                cells.append(_top_score(result))
                cells += [scores[name] for name in names]
            writer.writerow(cells)


def _json_result(result: dict) -> dict:
    if "label" in result:
        return {
            "prediction": result["label"],
            "score": _top_score(result),
            "scores": result["scores"],
        }
    if "labels" in result:
        return {"prediction": result["labels"], "scores": result["scores"]}
    return {"prediction": result.get("value")}


def _top_score(result: dict) -> float:
    scores = result["scores"]
    if "label" in result:
        return scores[result["label"]]
    chosen = [scores[name] for name in result.get("labels", [])]
    return min(chosen) if chosen else max(scores.values(), default=0.0)


# --------------------------------------------------------------------------- summary


def prediction_summary(
    rows: list[InputRow], results: list[dict], *, task: str, names: list[str]
) -> dict:
    """Counts, and for rows with a given label: accuracy and macro-F1 (single-label), subset
    accuracy (multi-label, labels joined with '|') or MAE and RMSE (regression)."""
    labelled = [(row.label, result) for row, result in zip(rows, results, strict=True) if row.label]
    summary: dict = {"rows": len(rows), "labelled_rows": len(labelled)}
    if task == "single_label":
        summary["predicted_counts"] = _counts(result["label"] for result in results)
    if not labelled:
        return summary
    if task == "single_label":
        truth = [label for label, _ in labelled]
        predicted = [result["label"] for _, result in labelled]
        summary |= classification_scores(truth, predicted)
        unknown = sorted(set(truth) - set(names))
        if unknown:
            summary["unknown_labels"] = unknown[:20]
    elif task == "multi_label":
        hits = sum(
            set(filter(None, label.split("|"))) == set(result["labels"])
            for label, result in labelled
        )
        summary["subset_accuracy"] = round(hits / len(labelled), 6)
    else:
        errors = []
        for label, result in labelled:
            try:
                errors.append(float(label) - float(result["value"]))
            except (TypeError, ValueError):
                continue
        if errors:
            summary["mae"] = round(sum(abs(e) for e in errors) / len(errors), 6)
            summary["rmse"] = round(math.sqrt(sum(e * e for e in errors) / len(errors)), 6)
    return summary


def classification_scores(truth: list[str], predicted: list[str]) -> dict:
    """Accuracy, macro-F1 over every class given or predicted, and per-class figures."""
    classes = sorted(set(truth) | set(predicted))
    per_class = {}
    for name in classes:
        true_positive = sum(t == name and p == name for t, p in zip(truth, predicted, strict=True))
        predicted_count = sum(p == name for p in predicted)
        support = sum(t == name for t in truth)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": support,
        }
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    macro = sum(item["f1"] for item in per_class.values()) / len(per_class)
    return {
        "accuracy": round(correct / len(truth), 6),
        "macro_f1": round(macro, 6),
        "per_class": per_class,
    }


def _counts(values: Iterator[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --------------------------------------------------------------------------- suggestions


def suggestion_source(version: ModelVersion) -> str:
    """One source per version, so predicting again replaces that version's suggestions."""
    return f"{version.registered_model.name} v{version.version}"


def _store_suggestions(
    batch: BatchPrediction, rows: list[InputRow], results: list[dict], *, task: str
) -> int:
    from datasets_app.services.suggestions import record_suggestions_store

    def predictions() -> Iterator[dict]:
        for row, result in zip(rows, results, strict=True):
            if row.record_id is None:
                continue
            probability = _top_score(result) if task != "regression" else None
            yield {
                "record_id": row.record_id,
                "label": _prediction_text(result),
                "probability": probability,
            }

    outcome = record_suggestions_store(
        dataset=batch.snapshot.dataset,
        predictions=predictions(),
        source=suggestion_source(batch.model_version),
        user=batch.created_by,
    )
    return outcome["stored"]


# --------------------------------------------------------------------------- reads


def batch_prediction_list_for_version(*, user, version: ModelVersion) -> QuerySet:
    access_check(user, "model_version", "view")
    return version.batch_predictions.select_related("snapshot", "snapshot__dataset")


def batch_prediction_get_for_user(*, user, batch_id: int) -> BatchPrediction:
    access_check(user, "model_version", "view")
    batch = (
        BatchPrediction.objects.select_related(
            "model_version", "model_version__registered_model", "snapshot", "snapshot__dataset"
        )
        .filter(pk=batch_id)
        .first()
    )
    if batch is None:
        raise Http404("This batch prediction does not exist.")
    return batch


def batch_prediction_download_response(batch: BatchPrediction) -> FileResponse:
    if batch.status != BatchPrediction.Status.SUCCEEDED or not batch.output_file:
        raise Http404("This batch prediction has no file to download yet.")
    if not default_storage.exists(batch.output_file):
        raise Http404("The predictions file is missing from storage.")
    content_type = "text/csv" if batch.output_format == "csv" else "application/x-ndjson"
    return FileResponse(
        default_storage.open(batch.output_file, "rb"),
        as_attachment=True,
        filename=Path(batch.output_file).name,
        content_type=f"{content_type}; charset=utf-8",
    )
