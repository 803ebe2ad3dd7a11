"""Batch prediction: a model version over a snapshot's split or an uploaded file, as a job.

The job reads its rows (snapshot records, a dataset's unlabeled records for pre-labels, or the
file through the same forgiving reader as dataset imports), predicts them in chunks with the
serving runtime (the fastest one that passed parity, as deploy chooses, or the endpoint's), writes a CSV or JSON Lines
file (formula-escaped like dataset exports) with each row's prediction, the score of every
class and the given label where there is one, sums up accuracy and macro-F1 for labelled rows,
and can store the predictions on the dataset's records as suggestions for the labeling queue.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import secrets
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404

from lepton_web import vocabulary
from lepton_web.access import access_check
from lepton_web.jobs import job_create_and_enqueue, job_heartbeat
from models_app.models import BatchPrediction, Deployment, ModelVersion

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CHUNK_ROWS = 256  # texts predicted between progress reports (and cancel checks)
READ_ROWS = 5_000  # rows read from the snapshot or file at a time
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
    version: ModelVersion | None = None,
    deployment: Deployment | None = None,
    snapshot=None,
    split: str = "",
    upload=None,
    dataset=None,
    text_column: str = "",
    label_column: str = "",
    output_format: str = BatchPrediction.Format.CSV,
    store_suggestions: bool = False,
    enqueue: bool = True,
) -> BatchPrediction:
    """Queue a batch prediction of ``version`` (or of the version an endpoint serves, with its
    runtime) over ``snapshot`` (one split, or all), over an uploaded file (saved as it is and
    read by the job), or over the unlabeled records of ``dataset`` (pre-labels: the predictions
    are stored on the records as suggestions). Without an endpoint the job runs on the fastest
    runtime that passed parity, as deploy does by default.

    ``enqueue=False`` creates the queued row only, for a caller that runs it itself."""
    from datasets_app.models import SnapshotRecord

    access_check(user, "model_version", "create")
    if (version is None) == (deployment is None):
        raise ValidationError({"version": "Choose a model version or an endpoint, not both."})
    runtime = ""
    if deployment is not None:
        version, runtime = deployment.version, deployment.runtime
    if version.status != ModelVersion.Status.READY:
        raise ValidationError({"version": f"{version} is not ready, so it cannot predict yet."})
    if output_format not in BatchPrediction.Format.values:
        raise ValidationError({"output_format": "The output format must be csv or jsonl."})
    if sum(source is not None for source in (snapshot, upload, dataset)) != 1:
        raise ValidationError(
            {
                "source": "Choose one input: a snapshot, an uploaded file or a dataset's "
                "unlabeled records."
            }
        )
    fields: dict = {}
    if dataset is not None:
        if not dataset.is_ready:
            raise ValidationError(
                {"dataset": f"{dataset} is not ready yet; pre-label it once its import finished."}
            )
        count = unlabeled_records(dataset).count()
        if not count:
            raise ValidationError(
                {
                    "dataset": f"Every record of {dataset} has a label: there is nothing to pre-label."
                }
            )
        store_suggestions = True
        fields = {
            "source": BatchPrediction.Source.UNLABELED,
            "dataset": dataset,
            "rows_total": count,
        }
    elif snapshot is not None:
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
    if not runtime:
        from models_app.deploy import default_runtime

        runtime = default_runtime(version)
    fields |= {
        "model_version": version,
        "deployment": deployment,
        "runtime": runtime,
        "output_format": output_format,
        "store_suggestions": store_suggestions,
        "created_by": user,
    }
    if not enqueue:
        return BatchPrediction.objects.create(**fields)
    # BrokerUnavailable (nothing saved) reaches the caller: the API answers 503, pages say so.
    return job_create_and_enqueue(model=BatchPrediction, **fields)


def unlabeled_records(dataset):
    """The records pre-labels predict: active, not excluded, without a label."""
    from datasets_app.models import Record

    return Record.objects.filter(
        import_run_id=dataset.active_import_id, label="", is_excluded=False
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

    batch = (
        BatchPrediction.objects.select_related(
            "model_version", "model_version__registered_model", "snapshot", "dataset"
        )
        .filter(pk=batch_id)
        .first()
    )
    if batch is None:
        return  # deleted (with its version) while queued: nothing to do, not an error
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
    """Stream the input through the model chunk by chunk, writing the output as it goes: memory
    stays flat however many rows (up to MAX_ROWS) the input has."""
    version = batch.model_version
    suggestions: list[dict] = []
    with tempfile.TemporaryDirectory() as work:
        left_out = _LeftOut()
        chunks, expected = _open_input(batch, Path(work), left_out)
        runtime_name = _runtime_available(batch)
        _report(batch, progress=1, message=f"Loading {version} ({vocabulary.word(runtime_name)}).")
        with batch_predictor(version, runtime_name) as predictor:
            task, names = predictor.task, predictor.label_names
            output = Path(work) / f"predictions-{batch.pk}.{batch.output_format}"
            summary = _Summary(task, names)
            done = 0
            with _OutputWriter(
                output,
                batch.output_format,
                task=task,
                names=names,
                has_records=batch.source != BatchPrediction.Source.UPLOAD,
            ) as writer:
                for rows in chunks:
                    for start in range(0, len(rows), CHUNK_ROWS):
                        if should_stop():
                            raise _Stopped
                        chunk = rows[start : start + CHUNK_ROWS]
                        if done + len(chunk) > MAX_ROWS:
                            raise ValidationError(
                                f"A batch can hold up to {MAX_ROWS:,} rows; this input has more."
                            )
                        results = predictor.predict([row.text for row in chunk])
                        writer.write(chunk, results)
                        summary.add(chunk, results)
                        if batch.store_suggestions:
                            suggestions.extend(_suggestions(chunk, results, task=task))
                        done += len(chunk)
                        # A file's row count is the reader's estimate until it is read.
                        total = max(expected, done)
                        about = "about " if batch.source == BatchPrediction.Source.UPLOAD else ""
                        # This attempt's own row only (a stale one writes no counts).
                        BatchPrediction.objects.filter(
                            pk=batch.pk, **batch.attempt_filter()
                        ).update(rows_done=done, rows_total=total)
                        _report(
                            batch,
                            progress=1 + int(94 * done / total),
                            message=f"Predicted {done:,} of {about}{total:,} rows.",
                        )
        if not done and batch.source != BatchPrediction.Source.UNLABELED:
            raise ValidationError("There are no texts to predict in the input.")
        # Cancelled after the last chunk's report: store nothing.
        _report(batch, progress=96, message="Storing the predictions file.")
        # A name of this attempt's own: a stale attempt (handed on by the sweeper while it
        # seemed lost) never writes over, or deletes, the file the current attempt published.
        with output.open("rb") as handle:
            stored_name = default_storage.save(
                batch_output_name(batch, output.name), File(handle, name=output.name)
            )
    message = f"Predicted {done:,} rows with {vocabulary.word(runtime_name)}.{left_out.sentence()}"
    # Published in one transaction with the check of the attempt: the suggestions, the row's
    # file and summary, and succeeded. A cancelled or superseded attempt rolls it all back and
    # removes its file.
    with_suggestions = batch.store_suggestions and (batch.snapshot or batch.dataset) is not None
    try:
        if with_suggestions:  # before the transaction: a report holds the row until commit
            _report(batch, progress=97, message="Storing the predictions as suggestions.")
        with transaction.atomic():
            stored = None
            if with_suggestions:
                stored = _store_suggestions(batch, suggestions)
                message += f" Stored {stored:,} suggestions on the dataset's records."
            finished = BatchPrediction.objects.filter(
                pk=batch.pk, status=BatchPrediction.Status.RUNNING, **batch.attempt_filter()
            ).update(
                output_file=stored_name,
                summary=summary.result(),
                rows_total=done,
                suggestions_stored=stored,
            )
            if not finished or not batch.succeed(message=message):
                raise _Stopped
    except BaseException:
        _remove_quietly(stored_name)
        raise
    _remove_other_attempts(batch, stored_name)


def batch_output_name(batch: BatchPrediction, filename: str) -> str:
    """Where an attempt stores its output: ``predictions/<id>/attempt-<n>-<random>/<file>``
    (the download keeps the plain file name)."""
    attempt = batch.claimed_attempt or batch.attempts
    return f"predictions/{batch.pk}/attempt-{attempt}-{secrets.token_hex(4)}/{filename}"


def _remove_quietly(name: str) -> None:
    try:
        default_storage.delete(name)
        _remove_empty_folder(name.rsplit("/", 1)[0])
    except Exception:  # a leftover file is only wasted space; a later success removes it
        logger.warning("Could not remove the unpublished predictions file %s", name, exc_info=True)


def _remove_other_attempts(batch: BatchPrediction, published: str) -> None:
    """Once an attempt published its file: what earlier attempts (that died) left stored."""
    folder = f"predictions/{batch.pk}"
    keep = published.split("/")[2]
    try:
        attempts, _files = default_storage.listdir(folder)
        for name in attempts:
            if name.startswith("attempt-") and name != keep:
                for leftover in default_storage.listdir(f"{folder}/{name}")[1]:
                    default_storage.delete(f"{folder}/{name}/{leftover}")
                _remove_empty_folder(f"{folder}/{name}")
    except (OSError, NotImplementedError):
        logger.warning("Could not remove earlier attempts' files of %s", batch, exc_info=True)


def _remove_empty_folder(name: str) -> None:
    try:
        path = Path(default_storage.path(name))
    except NotImplementedError:
        return  # remote storage has no folders
    with contextlib.suppress(OSError):
        path.rmdir()


def _runtime_available(batch: BatchPrediction) -> str:
    """The job's runtime, or PyTorch when its export has gone since the job was queued;
    written on the job, so it names the runtime that made the predictions."""
    from models_app.deploy import export_for_runtime

    name = batch.runtime or Deployment.Runtime.PYTORCH
    if name != Deployment.Runtime.PYTORCH and export_for_runtime(batch.model_version, name) is None:
        name = Deployment.Runtime.PYTORCH
    if name != batch.runtime:
        BatchPrediction.objects.filter(pk=batch.pk).update(runtime=name)
        batch.runtime = name
    return name


@contextmanager
def batch_predictor(version: ModelVersion, runtime_name: str) -> Iterator:
    """The version loaded for ``runtime_name`` on this machine (the file of its newest finished
    export of that kind, as stored under the export's own name), with the machine's threads: a
    batch has the worker process to itself."""
    from models_app import runtime
    from models_app.deploy import export_for_runtime
    from models_app.serving import export_relative_name, model_version_serving_copy

    export = export_for_runtime(version, runtime_name)
    relative = export_relative_name(version, export) if export is not None else None
    # The local copy is held for the whole job: a sweep never removes it under the job.
    with model_version_serving_copy(version, [relative] if relative else []) as folder:
        yield runtime.load_predictor(
            folder,
            runtime=runtime_name,
            task=version.task or None,
            threads=runtime.engines.thread_count(),
            onnx_file=folder / relative if relative else None,
        )


def _report(batch: BatchPrediction, *, progress: int, message: str) -> None:
    if not batch.report(progress=progress, message=message):
        raise _Stopped


@dataclass
class _LeftOut:
    """Rows of an uploaded file that were not predicted (an empty text), for the message."""

    empty: int = 0

    def sentence(self) -> str:
        if not self.empty:
            return ""
        rows = "1 row" if self.empty == 1 else f"{self.empty:,} rows"
        return f" Left out {rows} with an empty text."


def _open_input(
    batch: BatchPrediction, work: Path, left_out: _LeftOut | None = None
) -> tuple[Iterator[list[InputRow]], int]:
    """The input as chunks of rows, and how many rows it is expected to hold; rows of a file
    that are not predicted are counted in ``left_out``."""
    if batch.source == BatchPrediction.Source.SNAPSHOT:
        return _snapshot_chunks(batch)
    if batch.source == BatchPrediction.Source.UNLABELED:
        return _unlabeled_chunks(batch)
    return _file_chunks(batch, work, left_out if left_out is not None else _LeftOut())


def _unlabeled_chunks(batch: BatchPrediction) -> tuple[Iterator[list[InputRow]], int]:
    """The dataset's unlabeled records as they are when the job runs (keyset pages)."""
    if batch.dataset is None:
        raise ValidationError("The dataset of this pre-labeling job was deleted.")
    records = unlabeled_records(batch.dataset)

    def chunks() -> Iterator[list[InputRow]]:
        after = 0
        while True:
            page = list(
                records.filter(id__gt=after)
                .order_by("id")
                .values_list("id", "source_row", "text")[:READ_ROWS]
            )
            if not page:
                return
            after = page[-1][0]
            yield [
                InputRow(row=source_row, text=text, label="", record_id=record_id)
                for record_id, source_row, text in page
            ]

    return chunks(), records.count()


def _snapshot_chunks(batch: BatchPrediction) -> tuple[Iterator[list[InputRow]], int]:
    from datasets_app.models import SnapshotRecord

    if batch.snapshot is None:
        raise ValidationError("The snapshot of this batch prediction was deleted.")
    records = SnapshotRecord.objects.filter(snapshot=batch.snapshot)
    if batch.split:
        records = records.filter(split=batch.split)

    def chunks() -> Iterator[list[InputRow]]:
        after = 0
        while True:  # keyset pages: no long-lived cursor, no OFFSET
            page = list(
                records.filter(id__gt=after)
                .order_by("id")
                .values_list("id", "record_id", "source_row", "text", "label")[:READ_ROWS]
            )
            if not page:
                return
            after = page[-1][0]
            yield [
                InputRow(row=source_row, text=text, label=label, record_id=record_id)
                for _, record_id, source_row, text, label in page
            ]

    return chunks(), records.count()


def _file_chunks(
    batch: BatchPrediction, work: Path, left_out: _LeftOut
) -> tuple[Iterator[list[InputRow]], int]:
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
    mapping.validate(detection.columns)

    def chunks() -> Iterator[list[InputRow]]:
        for chunk in iter_records(path, detection, mapping, chunk_rows=READ_ROWS):
            if chunk.problems:
                # As an import: all or nothing. Predicting around a line that cannot be read
                # would shift the row numbers of every row after it in the output.
                raise ImportProblem(
                    " ".join(problem.message for problem in chunk.problems[:20])
                    + " Fix the file and upload it again."
                )
            frame = chunk.frame
            labels = frame["label"] if "label" in frame else [""] * len(frame)
            rows = [
                InputRow(row=int(source_row), text=str(text), label=_text(label))
                for source_row, text, label in zip(
                    frame["source_row"], frame["text"], labels, strict=True
                )
                if _text(text).strip()
            ]
            left_out.empty += len(frame) - len(rows)
            if rows:
                yield rows

    return chunks(), int(detection.estimated_rows or 0)


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


class _OutputWriter:
    """CSV (cells a spreadsheet would run are escaped, as in dataset exports) or JSON Lines."""

    def __init__(
        self, path: Path, output_format: str, *, task: str, names: list[str], has_records: bool
    ) -> None:
        self.path, self.format, self.task, self.names = path, output_format, task, names
        self.has_records = has_records

    def __enter__(self) -> _OutputWriter:
        from datasets_app.cleaning import spreadsheet_safe

        self.safe = spreadsheet_safe
        self.file = self.path.open("w", encoding="utf-8", newline="")
        if self.format == BatchPrediction.Format.CSV:
            self.csv = csv.writer(self.file)
            header = ["row", *(["record_id"] if self.has_records else [])]
            header += ["text", "label", "prediction"]
            if self.task != "regression":
                header += ["score", *[f"score:{name}" for name in self.names]]
            self.csv.writerow([self.safe(cell) for cell in header])
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()

    def write(self, rows: list[InputRow], results: list[dict]) -> None:
        for row, result in zip(rows, results, strict=True):
            if self.format == BatchPrediction.Format.JSONL:
                item: dict = {"row": row.row}
                if self.has_records:
                    item["record_id"] = row.record_id
                item |= {"text": row.text, "label": row.label or None, **_json_result(result)}
                self.file.write(json.dumps(item, ensure_ascii=False) + "\n")
                continue
            cells: list = [row.row, *([row.record_id] if self.has_records else [])]
            cells += [self.safe(row.text), self.safe(row.label)]
            cells.append(self.safe(_prediction_text(result)))
            if self.task != "regression":
                cells.append(_top_score(result))
                cells += [result["scores"][name] for name in self.names]
            self.csv.writerow(cells)


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


class _Summary:
    """Counts, and for rows with a given label: accuracy and macro-F1 (single-label), subset
    accuracy (multi-label, labels joined with '|') or MAE and RMSE (regression), gathered
    chunk by chunk in constant memory."""

    def __init__(self, task: str, names: list[str]) -> None:
        self.task, self.names = task, names
        self.rows = self.labelled = 0
        self.predicted: Counter = Counter()
        self.pairs: Counter = Counter()  # (given, predicted) -> count
        self.hits = 0
        self.errors = self.absolute = self.squared = 0.0
        self.numeric = 0

    def add(self, rows: list[InputRow], results: list[dict]) -> None:
        for row, result in zip(rows, results, strict=True):
            self.rows += 1
            if self.task == "single_label":
                self.predicted[result["label"]] += 1
            if not row.label:
                continue
            self.labelled += 1
            if self.task == "single_label":
                self.pairs[row.label, result["label"]] += 1
            elif self.task == "multi_label":
                self.hits += set(filter(None, row.label.split("|"))) == set(result["labels"])
            else:
                try:
                    error = float(row.label) - float(result["value"])
                except (TypeError, ValueError):
                    continue
                self.numeric += 1
                self.absolute += abs(error)
                self.squared += error * error

    def result(self) -> dict:
        summary: dict = {"rows": self.rows, "labelled_rows": self.labelled}
        if self.task == "single_label":
            summary["predicted_counts"] = dict(
                sorted(self.predicted.items(), key=lambda item: (-item[1], item[0]))
            )
        if not self.labelled:
            return summary
        if self.task == "single_label":
            summary |= _scores_from_pairs(self.pairs)
            unknown = sorted({given for given, _ in self.pairs} - set(self.names))
            if unknown:
                summary["unknown_labels"] = unknown[:20]
        elif self.task == "multi_label":
            summary["subset_accuracy"] = round(self.hits / self.labelled, 6)
        elif self.numeric:
            summary["mae"] = round(self.absolute / self.numeric, 6)
            summary["rmse"] = round(math.sqrt(self.squared / self.numeric), 6)
        return summary


def classification_scores(truth: list[str], predicted: list[str]) -> dict:
    """Accuracy, macro-F1 over every class given or predicted, and per-class figures."""
    return _scores_from_pairs(Counter(zip(truth, predicted, strict=True)))


def _scores_from_pairs(pairs: Counter) -> dict:
    classes = sorted({name for pair in pairs for name in pair})
    per_class = {}
    for name in classes:
        true_positive = pairs[name, name]
        predicted_count = sum(count for (_, p), count in pairs.items() if p == name)
        support = sum(count for (t, _), count in pairs.items() if t == name)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": support,
        }
    total = sum(pairs.values())
    correct = sum(count for (t, p), count in pairs.items() if t == p)
    macro = sum(item["f1"] for item in per_class.values()) / len(per_class)
    return {
        "accuracy": round(correct / total, 6),
        "macro_f1": round(macro, 6),
        "per_class": per_class,
    }


# --------------------------------------------------------------------------- suggestions


PRELABEL_SOURCE_PREFIX = "pre-label: "


def suggestion_source(version: ModelVersion, *, prelabel: bool = False) -> str:
    """One source per version, so predicting again replaces that version's suggestions.
    Pre-labels carry a prefix: a dataset keeps only its newest model's pre-labels."""
    name = f"{version.registered_model.name} v{version.version}"
    return f"{PRELABEL_SOURCE_PREFIX}{name}" if prelabel else name


def uncertainty(scores: dict[str, float]) -> dict[str, float]:
    """Top-1 probability, margin (top-1 minus top-2) and entropy (nats) of a single-label
    prediction's class probabilities: the figures an uncertainty-first queue orders by."""
    ordered = sorted(scores.values(), reverse=True)
    top = ordered[0] if ordered else 0.0
    second = ordered[1] if len(ordered) > 1 else 0.0
    entropy = -sum(p * math.log(p) for p in ordered if p > 0)
    return {"probability": top, "margin": top - second, "entropy": max(0.0, entropy)}


def _suggestions(rows: list[InputRow], results: list[dict], *, task: str) -> Iterator[dict]:
    for row, result in zip(rows, results, strict=True):
        if row.record_id is None:
            continue
        item = {"record_id": row.record_id, "label": _prediction_text(result)}
        if task == "single_label":
            item |= uncertainty(result["scores"])
        elif task != "regression":
            item["probability"] = _top_score(result)
        yield item


def _store_suggestions(batch: BatchPrediction, suggestions: list[dict]) -> int:
    from datasets_app.services.suggestions import record_suggestions_store

    prelabel = batch.source == BatchPrediction.Source.UNLABELED
    outcome = record_suggestions_store(
        dataset=batch.dataset if prelabel else batch.snapshot.dataset,
        predictions=iter(suggestions),
        source=suggestion_source(batch.model_version, prelabel=prelabel),
        user=batch.created_by,
        replaces_prefix=PRELABEL_SOURCE_PREFIX if prelabel else "",
    )
    return outcome["stored"]


# --------------------------------------------------------------------------- reads


def batch_prediction_list_for_version(*, user, version: ModelVersion) -> QuerySet:
    access_check(user, "model_version", "view")
    return version.batch_predictions.select_related("snapshot", "snapshot__dataset").order_by(
        "-created_at", "-id"
    )


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


def prelabel_latest(dataset) -> BatchPrediction | None:
    """The newest pre-labeling job of ``dataset``."""
    return (
        BatchPrediction.objects.filter(dataset=dataset, source=BatchPrediction.Source.UNLABELED)
        .select_related("model_version", "model_version__registered_model", "deployment")
        .order_by("-created_at", "-id")
        .first()
    )


def prelabel_choices(*, user) -> dict:
    """What pre-labels can come from: ready, unarchived classifiers and live endpoints."""
    access_check(user, "model_version", "view")
    versions = (
        ModelVersion.objects.filter(
            status=ModelVersion.Status.READY,
            is_archived=False,
            task__in=["single_label", "multi_label"],
        )
        .select_related("registered_model")
        .order_by("registered_model__name", "-version")
    )
    endpoints = (
        Deployment.objects.filter(
            status=Deployment.Status.LIVE, version__task__in=["single_label", "multi_label"]
        )
        .select_related("version", "version__registered_model")
        .order_by("slug")
    )
    return {"versions": list(versions), "endpoints": list(endpoints)}
