"""What every dataset job shares: one job of records-changing work at a time, starting a job
(nothing queued when the broker is down), and running a claimed one to a plain ending."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db import OperationalError, connection, transaction

from datasets_app.models import Dataset, DatasetJob
from lepton_web.jobs import ACTIVE_STATUSES, job_heartbeat

logger = logging.getLogger(__name__)

# Jobs that change the records: only one of them per dataset is queued or running at a time.
RECORD_WRITERS = (DatasetJob.Kind.IMPORT, DatasetJob.Kind.SPLIT, DatasetJob.Kind.CLEAN)
BUSY_MESSAGES = {
    DatasetJob.Kind.IMPORT: "An import of this dataset is running. Wait for it to finish "
    "(or cancel it), then try again.",
    DatasetJob.Kind.SPLIT: "Splits of this dataset are being assigned. Wait for that to finish, "
    "then try again.",
    DatasetJob.Kind.CLEAN: "A cleaning fix is being applied to this dataset. Wait for it to "
    "finish, then try again.",
}


LOCK_WAIT = "3s"
BUSY = (
    "A split, cleaning fix or import of this dataset is being saved right now. Try again in a "
    "few seconds; nothing was changed."
)


class DatasetBusy(ValidationError):
    """The dataset row stayed locked by a job saving its work for longer than LOCK_WAIT."""

    def __init__(self) -> None:
        super().__init__(BUSY)


def dataset_lock(dataset: Dataset, *, no_key: bool = True, wait: str | None = LOCK_WAIT) -> Dataset:
    """Lock the dataset row and return it fresh; call inside a transaction. Every writer of a
    dataset's records takes it, so they never interleave.

    A split, fix or import holds this lock while it writes (seconds on a large dataset), so a
    request that needs it gives up after ``wait`` with DatasetBusy (a plain sentence) instead
    of hanging until a gateway timeout; jobs on a worker pass ``wait=None`` and queue behind.
    ``no_key``: FOR NO KEY UPDATE, else FOR UPDATE.
    """
    rows = Dataset.objects.select_for_update(no_key=no_key)
    if wait is None or connection.vendor != "postgresql":
        return rows.get(pk=dataset.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout')")
        previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [wait])
    try:
        with transaction.atomic():
            return rows.get(pk=dataset.pk)
    except OperationalError as exc:
        if getattr(exc.__cause__, "pgcode", None) == "55P03":  # lock_not_available
            raise DatasetBusy() from None
        raise
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])


class JobLost(Exception):
    """The job stopped being ours (cancelled, or handed to another worker) before its commit."""


def error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(m for msgs in exc.message_dict.values() for m in msgs)
    return " ".join(exc.messages)


def dataset_busy_check(dataset: Dataset, *, kinds=RECORD_WRITERS) -> None:
    """Refuse, with a sentence, while a job of ``kinds`` of this dataset is queued or running."""
    active = (
        dataset.jobs.filter(kind__in=kinds, status__in=ACTIVE_STATUSES)
        .order_by("created_at")
        .values_list("kind", flat=True)
        .first()
    )
    if active:
        raise ValidationError(BUSY_MESSAGES[active])


def dataset_job_start(*, dataset: Dataset, kind: str, params: dict, user) -> DatasetJob:
    """Queue a job of ``kind`` unless another records-changing job of the dataset is active.

    The dataset row is locked while checking, so two requests cannot both queue one. The row is
    committed before it is published (a worker must find it) and deleted again when the broker
    cannot be reached: nothing queued.
    """
    with transaction.atomic():
        locked = dataset_lock(dataset, no_key=False)
        dataset_busy_check(locked)
        job = DatasetJob.objects.create(dataset=locked, kind=kind, mapping=params, created_by=user)
    job.enqueue_or_delete()
    return job


def dataset_job_run(
    *, job_id: int, kind: str, work: Callable[[DatasetJob], None], what: str
) -> DatasetJob | None:
    """Claim the job and run ``work(job)``, which ends it with ``job.succeed`` in the transaction
    of its writes, so the writes are visible exactly when the job says it succeeded. A user's
    mistake found on the way fails the job with its sentence; a crash fails it with a plain one.
    A worker that dies leaves it running with nothing written: the sweeper requeues it."""
    job = DatasetJob.objects.select_related("dataset").filter(pk=job_id, kind=kind).first()
    if job is None or not job.claim():
        return None  # taken by another worker, or finished: never a second copy
    try:
        # Reading and grouping a large dataset can take longer than the sweeper waits for a
        # silent job: keep its heartbeat fresh from a thread of its own.
        with job_heartbeat(job):
            work(job)
    except ValidationError as exc:
        job.fail(error=error_text(exc))
    except JobLost:
        logger.warning("Dataset job %s stopped being ours before its commit", job.pk)
    except Exception:
        logger.exception("Dataset job %s crashed", job.pk)
        job.fail(
            error=f"{what} stopped because of an internal error, which was logged. "
            "Nothing was changed; try again."
        )
        raise
    job.refresh_from_db()
    return job


def job_succeed_in_transaction(job: DatasetJob, *, message: str) -> None:
    """Mark the job succeeded inside the caller's transaction; roll back if it is not ours."""
    if not job.succeed(message=message):
        raise JobLost()
