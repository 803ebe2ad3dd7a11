"""Upload, detection and the import job: stream the stored file into records, all or nothing."""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import connection, transaction
from django.utils import timezone

from datasets_app.csv_io import (
    WRONG_ENCODING_FLAG,
    ColumnMapping,
    Detection,
    ImportProblem,
    detect,
    iter_records,
    override_errors,
)
from datasets_app.limits import human_bytes, import_limits
from datasets_app.models import (
    RECORD_ID_BLOCK,
    Annotation,
    CleaningChange,
    Dataset,
    DatasetJob,
    LabelChange,
    LabelClaim,
    Record,
    ReviewItem,
)
from lepton_web.access import access_check
from lepton_web.bulk import ParentMissing, can_check_keys_once, keys_checked_once
from lepton_web.jobs import BrokerUnavailable, JobStatus

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
MAX_PROBLEMS = 20  # problems listed on a failed import; "(and more)" says there were others
IMPORT_CHUNK_ROWS = 25_000  # rows parsed, written and reported at a time


# --- upload and detection ---------------------------------------------------------------------
def dataset_upload(
    *,
    user,
    file,
    name: str = "",
    description: str = "",
    licence: str = "",
    attribution: str = "",
) -> Dataset:
    """Store the raw file unchanged (with its SHA-256) first, then look at it.

    A file that cannot be read still becomes a dataset in state "failed" with the reason, so
    nothing the user sent is lost and a different encoding or delimiter can be tried.
    """
    access_check(user, "dataset", "create")
    limits = import_limits()
    if file.size > limits.max_file_bytes:
        raise ValidationError(
            {
                "file": f"Files can be up to {human_bytes(limits.max_file_bytes)}; "
                f"this one is {human_bytes(file.size)}."
            }
        )
    if file.size == 0:
        raise ValidationError({"file": "The file is empty. Choose a file with a header and rows."})
    digest = hashlib.sha256()
    for chunk in file.chunks():
        digest.update(chunk)
    file.seek(0)
    filename = Path(file.name or "upload.csv").name
    dataset = Dataset(
        name=(name or Path(filename).stem)[:200],
        description=description,
        source_filename=filename[:255],
        source_size_bytes=file.size,
        source_sha256=digest.hexdigest(),
        licence=licence,
        attribution=attribution,
        created_by=user,
    )
    # Storage upload happens outside any transaction (it may be slow or remote).
    dataset.source_file.save(filename, file, save=False)
    dataset.save()
    return dataset_detect(dataset=dataset)


@contextmanager
def local_copy(field_file) -> Iterator[Path]:
    """A local path to a stored file: the file itself on disk storage, else a temporary copy."""
    try:
        path = Path(field_file.path)
    except NotImplementedError:
        path = None
    if path is not None:
        if not path.is_file():
            raise ImportProblem(
                "The uploaded file is no longer in storage, so it cannot be read. Upload it again."
            )
        yield path
        return
    suffix = Path(field_file.name).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as temp:
        with field_file.open("rb") as source:
            shutil.copyfileobj(source, temp, length=1024 * 1024)
        temp.flush()
        yield Path(temp.name)


def dataset_detect(
    *,
    dataset: Dataset,
    encoding: str | None = None,
    delimiter: str | None = None,
    quoting: str | None = None,
    has_header: bool | None = None,
) -> Dataset:
    """(Re)detect how to read the stored file; user overrides win over detection.

    Overrides that cannot read any file (a non-text codec, a line break as delimiter) raise
    ``ValidationError`` by field and change nothing; a file they cannot read fails the dataset.
    ``quoting`` is "double", "single" or "none"; None detects it.
    """
    errors = override_errors(encoding=encoding, delimiter=delimiter, quoting=quoting)
    if errors:
        raise ValidationError({name: [message] for name, message in errors.items()})
    if dataset.jobs.filter(kind=DatasetJob.Kind.IMPORT, status__in=["queued", "running"]).exists():
        raise ValidationError(
            "An import of this file is queued or running. Wait for it or cancel it, then read "
            "the file again."
        )
    try:
        with local_copy(dataset.source_file) as path:
            detection = detect(
                path,
                filename=dataset.source_filename,
                limits=import_limits(),
                encoding=encoding or None,
                delimiter=delimiter or None,
                quoting=quoting or None,
                has_header=has_header,
            )
    except ImportProblem as problem:
        dataset.detection = {}
        dataset.status = Dataset.Status.READY if dataset.active_import_id else Dataset.Status.FAILED
        dataset.status_message = problem.message
        dataset.save(update_fields=["detection", "status", "status_message", "updated_at"])
        return dataset
    from datasets_app.csv_io import suggest_mapping

    dataset.detection = detection.as_dict()
    current = ColumnMapping.from_dict(dataset.mapping) if dataset.mapping else None
    try:
        if current is None:
            raise ImportProblem("no mapping yet")
        current.validate(detection.columns)
    except ImportProblem:
        dataset.mapping = suggest_mapping(detection.columns).as_dict()
    if not dataset.active_import_id:
        dataset.status = Dataset.Status.UPLOADED
    dataset.status_message = ""
    dataset.save(update_fields=["detection", "mapping", "status", "status_message", "updated_at"])
    return dataset


# --- starting, cancelling ------------------------------------------------------------------------
def dataset_import_start(*, dataset: Dataset, user, mapping: dict | None = None) -> DatasetJob:
    """Queue an import of the stored file with ``mapping``; nothing is queued when it is invalid."""
    from datasets_app.services.jobs import dataset_lock

    access_check(user, "dataset", "change")
    with transaction.atomic():
        dataset = dataset_lock(dataset, no_key=False)
        if dataset.jobs.filter(
            kind=DatasetJob.Kind.IMPORT, status__in=["queued", "running"]
        ).exists():
            raise ValidationError(
                "An import of this dataset is already running. Wait for it or cancel it."
            )
        from datasets_app.services.jobs import dataset_busy_check

        # Its records must not be replaced under a split or a fix that is being written.
        dataset_busy_check(dataset, kinds=(DatasetJob.Kind.SPLIT, DatasetJob.Kind.CLEAN))
        if not dataset.detection:
            raise ValidationError(
                dataset.status_message or "The file has not been read yet. Detect its format first."
            )
        column_mapping = ColumnMapping.from_dict(
            mapping if mapping is not None else dataset.mapping
        )
        try:
            column_mapping.validate(dataset.detection["columns"])
        except ImportProblem as problem:
            raise ValidationError({"mapping": problem.message}) from None
        previous_status = dataset.status
        dataset.mapping = column_mapping.as_dict()
        dataset.status = Dataset.Status.IMPORTING
        dataset.status_message = ""
        dataset.save(update_fields=["mapping", "status", "status_message", "updated_at"])
        job = DatasetJob.objects.create(
            dataset=dataset, kind=DatasetJob.Kind.IMPORT, mapping=dataset.mapping, created_by=user
        )
    try:
        job.enqueue()
    except BrokerUnavailable:
        job.delete()
        Dataset.objects.filter(pk=dataset.pk).update(status=previous_status)
        raise
    return job


def _dataset_settle(dataset_id: int, *, message: str) -> None:
    """After an import ends without success: back to the previous records, or to 'failed'."""
    dataset = Dataset.objects.get(pk=dataset_id)
    dataset.status = Dataset.Status.READY if dataset.active_import_id else Dataset.Status.FAILED
    dataset.status_message = message
    dataset.save(update_fields=["status", "status_message", "updated_at"])


def dataset_import_cancel(*, job: DatasetJob, user) -> DatasetJob:
    access_check(user, "dataset", "change")
    with transaction.atomic():  # the job's end and the dataset's status are seen together
        if not job.cancel():
            raise ValidationError("This import has already finished.")
        _dataset_settle(
            job.dataset_id, message="The import was cancelled; no records from it were kept."
        )
    return job


def dataset_import_abandoned(*, job: DatasetJob) -> None:
    """The sweeper gave up on this import (its workers kept dying): drop what it staged."""
    records_delete(Record.objects.filter(import_run=job))
    job.refresh_from_db(fields=["error_message"])
    _dataset_settle(job.dataset_id, message=job.error_message)


def records_delete(records) -> None:
    """Delete records set-based: what points at them (cleaning and label changes, claims,
    search entries) first, then one DELETE of the rows."""
    from datasets_app.services.search import search_entries_delete

    with transaction.atomic():
        for model in (CleaningChange, LabelChange, LabelClaim, Annotation, ReviewItem):
            model.objects.filter(record__in=records.values("id")).delete()
        search_entries_delete(records)
        records.delete()


def dataset_delete(*, dataset: Dataset, user) -> None:
    access_check(user, "dataset", "delete")
    runs = list(
        dataset.snapshots.filter(training_runs__isnull=False).values_list(
            "training_runs__id", flat=True
        )
    )
    if runs:
        shown = ", ".join(f"#{run}" for run in sorted(set(runs))[:5])
        raise ValidationError(
            f"Training runs {shown} were trained on snapshots of this dataset. Delete those runs "
            "first; the dataset stays so that they remain reproducible."
        )
    stored = dataset.source_file
    with transaction.atomic():
        # By import run, which is indexed; dataset_id alone is not (each index is paid per row).
        records_delete(Record.objects.filter(import_run__in=dataset.jobs.values("id")))
        dataset.delete()
    if stored.name:  # a dataset whose file was never stored has none to remove
        transaction.on_commit(lambda: stored.storage.delete(stored.name))


# --- the import job -------------------------------------------------------------------------------
# The order of the COPY rows that RecordWriter builds: the per-import constants come last.
RECORD_COLUMNS = [
    "source_row",
    "text",
    "label",
    "split",
    "file_split",
    "external_id",
    "metadata",
    "flags",
    "dataset_id",
    "import_run_id",
    "is_excluded",
    "exclusion_reason",
]
COPY_COLUMNS = ["id", *RECORD_COLUMNS]


# COPY text format: these four characters are escaped inside values; nothing else is.
_COPY_ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"))


def _copy_field(values: list) -> list[bytes]:
    """A column as COPY text-format fields (UTF-8, escaped).

    The values are joined on NUL (PostgreSQL text can never hold it, and the parser removes
    it), encoded and escaped as one byte string by a few C-speed replaces, and split again:
    per-value Python calls would cost several times more on a million rows. A column with one
    value throughout (an unmapped label, no metadata) is encoded once.
    """
    if len(values) > 1 and values.count(values[0]) == len(values):
        return _copy_field([values[0]]) * len(values)
    joined = "\x00".join(map(str, values)).encode()
    for special, escaped in _COPY_ESCAPES:
        if special in joined:
            joined = joined.replace(special, escaped)
    return joined.split(b"\x00")


class RecordWriter:
    """Write record frames: COPY on PostgreSQL, executemany on SQLite. Each chunk commits.

    On PostgreSQL the COPY runs on writer threads with connections of their own, so database
    server processes (parsing rows, checking keys, updating indexes) run on other cores while
    this process parses the next chunk; a bounded queue keeps memory flat. Ids are reserved
    here, in file order, so concurrent writers keep records in file order. The writer also
    counts labels and splits as rows pass, so finishing an import needs no scan of them.
    """

    def __init__(self, *, dataset_id: int, import_run_id: int):
        self.dataset_id, self.import_run_id = dataset_id, import_run_id
        self.table = Record._meta.db_table
        self.postgres = connection.vendor == "postgresql"
        # Inside a transaction (tests, or a caller's atomic block) a second connection could
        # not see the uncommitted dataset row, so COPY runs inline there.
        self.pipelined = self.postgres and not connection.in_atomic_block
        self.checks_once = self.postgres and can_check_keys_once()
        self.rows = 0
        self.label_counts: Counter[str] = Counter()
        self.split_counts: Counter[str] = Counter()
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        if self.pipelined:
            for number in range(max(1, settings.DATASET_IMPORT_WRITERS)):
                thread = threading.Thread(
                    target=self._copy_loop, name=f"record-copy-{number}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def write(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        self.label_counts.update(frame["label"].value_counts().to_dict())
        self.split_counts.update(frame["split"].value_counts().to_dict())
        if not self.postgres:
            self._insert(frame)
            return
        self._raise_if_failed()
        for start in range(0, len(frame), RECORD_ID_BLOCK):
            data = self._copy_data(frame.iloc[start : start + RECORD_ID_BLOCK])
            if self.pipelined:
                self._queue.put(data)
            else:
                self._copy(data)

    def distribution(self) -> tuple[int, dict[str, int], dict[str, int]]:
        """(rows, label counts most frequent first, split counts) of everything written, in
        the shape ``record_distribution`` gives for a query."""
        labels = dict(sorted(self.label_counts.items(), key=lambda item: (-item[1], item[0])))
        splits = dict(sorted(self.split_counts.items()))
        return self.rows, labels, splits

    def close(self) -> None:
        """Wait until every chunk is written; re-raise a failure of a writing thread."""
        for _ in self._threads:
            self._queue.put(None)  # one end marker per writer
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._raise_if_failed()

    def _copy_data(self, frame: pd.DataFrame) -> bytes:
        """The frame as COPY text-format rows, in COPY_COLUMNS order."""
        count = len(frame)
        first = self._reserve_ids(count)
        split = _copy_field(frame["split"].tolist())
        columns = [
            _copy_field(range(first, first + count)),
            _copy_field(frame["source_row"].tolist()),
            _copy_field(frame["text"].tolist()),
            _copy_field(frame["label"].tolist()),
            split,
            split,  # file_split: the split the file gave
            *(_copy_field(frame[name].tolist()) for name in ("external_id", "metadata", "flags")),
            # dataset_id, import_run_id, is_excluded, exclusion_reason (empty), end of row
            [f"{self.dataset_id}\t{self.import_run_id}\tf\t\n".encode()] * count,
        ]
        width = len(columns)
        fields: list[bytes] = [b""] * (count * width)
        for index, column in enumerate(columns):
            fields[index::width] = column
        # Every raw newline is a row end (those in values are escaped), so the tab that the
        # join put after each one is dropped.
        return b"\t".join(fields).replace(b"\n\t", b"\n")

    def _reserve_ids(self, count: int) -> int:
        """Take ``count`` consecutive ids; return the first.

        The id sequence steps by RECORD_ID_BLOCK (migration 0006), so one nextval owns the
        whole block after the value it returns: no other session can be handed an id in it,
        and a million rows need forty calls instead of a million (hi/lo allocation).
        """
        if count > RECORD_ID_BLOCK:
            raise ValueError(f"At most {RECORD_ID_BLOCK} records fit one id block.")
        with connection.cursor() as cursor:
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [self.table])
            return cursor.fetchone()[0]

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _copy(self, data: bytes) -> None:
        """COPY one chunk, committed on its own (unless the caller holds a transaction).

        Every row of a chunk has the same dataset and import run, so their foreign keys are
        checked once per chunk instead of once per row (see lepton_web/bulk.py).
        """
        sql = f"COPY {self.table} ({', '.join(COPY_COLUMNS)}) FROM STDIN"
        parents = [
            ("datasets_app_datasetjob", self.import_run_id),
            ("datasets_app_dataset", self.dataset_id),
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            try:
                with keys_checked_once(cursor, parents, enabled=self.checks_once):
                    cursor.copy_expert(sql, io.BytesIO(data), 1 << 20)  # 1 MiB reads
            except ParentMissing:
                raise ImportProblem(
                    "The dataset or this import was deleted while it ran; nothing was kept."
                ) from None

    def _copy_loop(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                if self._error is None:
                    self._copy(data)
        except BaseException as exc:  # handed to the importing thread at its next write/close
            self._error = exc
            while self._queue.get() is not None:  # drain so the producer never blocks;
                pass  # the end marker taken here was this thread's own
        finally:
            connection.close()

    def _insert(self, frame: pd.DataFrame) -> None:
        frame = frame.assign(
            file_split=frame["split"],
            dataset_id=self.dataset_id,
            import_run_id=self.import_run_id,
            is_excluded=False,
            exclusion_reason="",
        )[RECORD_COLUMNS]
        placeholders = ", ".join(["%s"] * len(RECORD_COLUMNS))
        sql = f"INSERT INTO {self.table} ({', '.join(RECORD_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
        rows = list(frame.itertuples(index=False, name=None))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)


def dataset_job_execute(*, job_id: int) -> None:
    job = DatasetJob.objects.filter(pk=job_id).only("kind").first()
    if job is None:
        return
    if job.kind == DatasetJob.Kind.IMPORT:
        dataset_import_execute(job_id=job_id)
    elif job.kind == DatasetJob.Kind.SEARCH_INDEX:
        from datasets_app.services.search import dataset_search_index_execute

        dataset_search_index_execute(job_id=job_id)
    elif job.kind == DatasetJob.Kind.SPLIT:
        from datasets_app.services.snapshots import dataset_split_execute

        dataset_split_execute(job_id=job_id)
    elif job.kind == DatasetJob.Kind.CLEAN:
        from datasets_app.services.cleaning import dataset_clean_execute

        dataset_clean_execute(job_id=job_id)
    elif job.kind == DatasetJob.Kind.AGREEMENT:
        from datasets_app.services.agreement import dataset_agreement_count_execute

        dataset_agreement_count_execute(job_id=job_id)
    else:
        from datasets_app.services.cleaning import dataset_report_execute

        dataset_report_execute(job_id=job_id)


def dataset_import_execute(*, job_id: int) -> DatasetJob | None:
    """Stream the file into staged records; make them visible only if every row was good."""
    job = DatasetJob.objects.select_related("dataset").filter(pk=job_id).first()
    if job is None or not job.claim():
        return None  # taken by another worker, finished, or cancelled: never a second copy
    # A restart after a lost worker begins again from the first row.
    records_delete(Record.objects.filter(import_run=job))
    dataset = job.dataset
    detection = Detection.from_dict(dataset.detection)
    mapping = ColumnMapping.from_dict(job.mapping)
    writer = RecordWriter(dataset_id=dataset.pk, import_run_id=job.pk)
    problems: list[ImportProblem] = []
    rows = wrong_encoding_rows = 0
    started = time.monotonic()
    estimated = max(1, detection.estimated_rows)
    try:
        with local_copy(dataset.source_file) as path:
            chunks = iter_records(
                path, detection, mapping, limits=import_limits(), chunk_rows=IMPORT_CHUNK_ROWS
            )
            for chunk in chunks:
                problems.extend(chunk.problems)
                if not problems:
                    writer.write(chunk.frame)
                rows += len(chunk.frame)
                wrong_encoding_rows += chunk.wrong_encoding_rows
                # Read on until one problem past those shown (or the end of the file), so the
                # summary knows whether to say "(and more)".
                if len(problems) > MAX_PROBLEMS:
                    break
                elapsed = max(time.monotonic() - started, 1e-6)
                rate = rows / elapsed
                left = max(0.0, (estimated - rows) / rate) if estimated > rows else None
                DatasetJob.objects.filter(pk=job.pk).update(
                    rows_done=rows, rows_per_second=round(rate, 1), seconds_left=left
                )
                if not job.report(
                    progress=min(95, int(95 * rows / estimated)),
                    message=f"{rows:,} rows read at {rate:,.0f} rows/s.",
                ):
                    writer.close()
                    if job.is_stale_attempt():
                        # Handed to a newer attempt, which restarted this import_run's records:
                        # leave them to it.
                        return job
                    records_delete(Record.objects.filter(import_run=job))
                    return job  # cancelled: the cancel service already settled the dataset
        writer.close()
        if rows == 0 and not problems:
            problems.append(ImportProblem("The file has a header but no rows under it."))
    except ImportProblem as problem:
        writer.close()
        problems.append(problem)
    except Exception:
        logger.exception("Import %s crashed", job.pk)
        try:
            writer.close()
        except Exception:
            logger.exception("Writing records of import %s failed too", job.pk)
        records_delete(Record.objects.filter(import_run=job))
        with transaction.atomic():  # seen together, as in _import_fail
            job.fail(
                error="The import stopped because of an internal error, which was logged. Retry it."
            )
            _dataset_settle(dataset.pk, message="The import stopped because of an internal error.")
        raise

    if problems:
        return _import_fail(job, problems, rows_read=rows)
    return _import_finish(
        job,
        seconds=time.monotonic() - started,
        distribution=writer.distribution(),
        wrong_encoding_rows=wrong_encoding_rows,
        encoding=detection.encoding,
    )


def _import_fail(job: DatasetJob, problems: list[ImportProblem], *, rows_read: int) -> DatasetJob:
    records_delete(Record.objects.filter(import_run=job))
    shown = problems[:MAX_PROBLEMS]
    DatasetJob.objects.filter(pk=job.pk).update(problems=[p.as_dict() for p in shown])
    more = " (and more)" if len(problems) > MAX_PROBLEMS else ""
    count = f"{len(shown)} problem{'s' if len(shown) != 1 else ''}{more}"
    summary = f"Nothing was imported: {count} found. First: {shown[0].message}"
    if "retry" not in summary and "upload" not in summary:
        summary += " Fix the file or change the mapping, then retry."
    # One transaction: the page reloads once it sees the job finished, so it must see the
    # dataset settled by then too (apart, a reload in between showed "Importing" for good).
    with transaction.atomic():
        job.fail(error=summary)
        _dataset_settle(job.dataset_id, message=summary)
    return job


def _import_finish(
    job: DatasetJob,
    *,
    seconds: float,
    distribution: tuple[int, dict, dict],
    wrong_encoding_rows: int = 0,
    encoding: str = "",
) -> DatasetJob:
    rows = distribution[0]
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=job.dataset_id)
        # The job must still be ours: a cancel that raced the last chunk wins, and so does a
        # newer attempt (this worker was paused long enough for the sweeper to hand it on).
        if not DatasetJob.objects.filter(
            pk=job.pk, status=JobStatus.RUNNING, **job.attempt_filter()
        ).exists():
            job.refresh_from_db(fields=["status", "attempts"])
            if not job.is_stale_attempt():
                # Cancelled: drop the staged records. A newer attempt writes the same
                # import_run's records now; those are its own to keep or drop.
                records_delete(Record.objects.filter(import_run=job))
            return job
        previous = dataset.active_import_id
        dataset.active_import = job
        dataset.status = Dataset.Status.READY
        dataset.status_message = ""
        # Counted by the writer as rows passed: no scan of a million records here.
        from datasets_app.services.label_counts import label_counts_set

        dataset.record_count, counts, dataset.split_counts = distribution
        label_counts_set(dataset, counts)  # the previous import's shards go too
        carried = 0
        if previous:
            from datasets_app.services.labeling import labels_carry_over

            carried = labels_carry_over(
                dataset_id=dataset.pk, previous_import_id=previous, import_id=job.pk
            )
            if carried:  # console labels changed the file's counts
                dataset_refresh_counts(dataset, save=False)
        dataset.quality_report = {}
        dataset.save()
        # Fixes applied to the records this import replaces can no longer be undone.
        dataset.cleaning_actions.filter(undone_at__isnull=True, superseded_at__isnull=True).update(
            superseded_at=timezone.now()
        )
        kept = f" Kept {carried:,} labels given in the console." if carried else ""
        if wrong_encoding_rows:
            kept += (
                f" {wrong_encoding_rows:,} of them read as garbled text in {encoding} and are "
                f"flagged {WRONG_ENCODING_FLAG}: check the file's encoding (How to read the file)."
            )
        job.succeed(message=f"Imported {rows:,} records in {seconds:.1f} s.{kept}")
    if previous:
        records_delete(Record.objects.filter(import_run_id=previous))
    from datasets_app.services.cleaning import dataset_report_start
    from datasets_app.services.search import dataset_search_index_start

    for start, what in (
        (dataset_report_start, "Quality report"),
        (dataset_search_index_start, "Search index"),
    ):
        try:
            start(dataset=dataset, user=None)
        except BrokerUnavailable:
            logger.warning("%s for dataset %s not queued: broker down", what, dataset.pk)
    return job


def dataset_refresh_counts(dataset: Dataset, *, save: bool = True) -> Dataset:
    from datasets_app.selectors import record_distribution
    from datasets_app.services.label_counts import label_counts_set

    active = Record.objects.filter(import_run_id=dataset.active_import_id, is_excluded=False)
    dataset.record_count, counts, dataset.split_counts = record_distribution(active)
    label_counts_set(dataset, counts)
    if save:
        dataset.save(
            update_fields=["record_count", "label_counts_base", "split_counts", "updated_at"]
        )
    return dataset


# --- demo data -----------------------------------------------------------------------------------------
DEMO_FILE = DEMO_DIR / "banking77_sample.csv"
DEMO_NAME = "Banking77 sample (demo)"
DEMO_LICENCE = "CC BY 4.0"
DEMO_ATTRIBUTION = (
    "A stratified sample of BANKING77 (PolyAI): Casanueva, Temčinas, Gerz, Henderson, Vulić (2020), "
    "Efficient Intent Detection with Dual Sentence Encoders, NLP4ConvAI workshop, ACL 2020. "
    "Source: github.com/PolyAI-LDN/task-specific-datasets, banking_data/train.csv. "
    "Licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
)


DEMO_MAPPING = {"text_columns": ["text"], "label_column": "label"}


class DemoImportNotQueued(BrokerUnavailable):
    """The demo file was stored as a dataset, but the broker was down so its import is not
    queued; loading the demo again starts it."""

    message = (
        "The demo dataset was saved, but the task queue (Celery broker) cannot be reached, so "
        "its import was not started. Check that the broker is running, then load the demo "
        "again to import it."
    )

    def __init__(self, *, dataset: Dataset):
        super().__init__()
        self.dataset = dataset


def demo_dataset_load(*, user) -> Dataset:
    """Load the shipped demo dataset and start its import.

    Idempotent while it exists: a later call returns the same dataset, and starts its import
    again when it has no imported records and no import queued or running (the broker was down
    the first time, or the import failed or was cancelled).
    """
    access_check(user, "dataset", "create")
    dataset = Dataset.objects.filter(name=DEMO_NAME).order_by("created_at").first()
    if dataset is not None:
        importing = dataset.jobs.filter(
            kind=DatasetJob.Kind.IMPORT, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).exists()
        if dataset.active_import_id or importing:
            return dataset
    else:
        with DEMO_FILE.open("rb") as handle:
            dataset = dataset_upload(
                user=user,
                file=File(handle, name=DEMO_FILE.name),
                name=DEMO_NAME,
                description="Customer-service messages labelled with one of 77 banking intents.",
                licence=DEMO_LICENCE,
                attribution=DEMO_ATTRIBUTION,
            )
    try:
        dataset_import_start(dataset=dataset, user=user, mapping=DEMO_MAPPING)
    except BrokerUnavailable as exc:
        raise DemoImportNotQueued(dataset=dataset) from exc
    dataset.refresh_from_db()
    return dataset
