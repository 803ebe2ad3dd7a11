"""The shared job base: long work is a row, not only a Celery message.

Imports, training runs, evaluations and batch predictions each subclass ``Job``. A row moves
through ``queued -> running -> succeeded | failed | cancelled`` and every transition is one
guarded conditional UPDATE, so two workers (or a worker and a user pressing Cancel) can never
both win. Running jobs write ``heartbeat_at``; ``jobs_sweep`` hands silent ones to the job type's
``recover`` hook, which by default requeues (the task resumes from whatever the job saved) up
to ``max_attempts`` and then fails the job with a message that says why.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The task queue could not be reached; nothing was started."""

    message = (
        "The task queue (Celery broker) cannot be reached, so the job was not started. Check "
        "that the broker is running, then try again."
    )

    def __str__(self) -> str:
        return self.message


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """Abstract base of every long-running job row."""

    Status = JobStatus

    # What a subclass sets: the Celery task that executes it, the access-rule resource that
    # guards it, and how many times a lost worker may be replaced before the job fails.
    task_name: str = ""
    access_resource: str = ""
    max_attempts: int = 3
    verbose_kind: str = "job"

    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    error_message = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__lte=100), name="%(app_label)s_%(class)s_progress_lte_100"
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in JobStatus]),
                name="%(app_label)s_%(class)s_status_valid",
            ),
        ]

    # --- reading --------------------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @classmethod
    def label(cls) -> str:
        return cls._meta.label_lower

    # --- guarded transitions ------------------------------------------------------------------
    # Each is one conditional UPDATE that returns whether it won; the in-memory row is refreshed.
    #
    # The attempt an instance claimed is remembered on it (not a field: refresh_from_db keeps
    # it). The worker's own transitions through that instance (report, succeed, fail, and its
    # heartbeat) are fenced by it: once the sweeper requeued a silent worker's job and another
    # worker claimed it again, the old worker, if it was only paused, loses every write to the
    # new attempt's row. Transitions by other callers (the sweeper, a user) stay unfenced.
    claimed_attempt: int | None = None

    def attempt_filter(self) -> dict:
        """The UPDATE filter that fences a claiming worker's writes to its own attempt."""
        return {} if self.claimed_attempt is None else {"attempts": self.claimed_attempt}

    def _transition(self, *, allowed: tuple[str, ...], fenced: bool = False, **changes) -> bool:
        changes.setdefault("updated_at", timezone.now())
        rows = type(self).objects.filter(pk=self.pk, status__in=allowed)
        if fenced:
            rows = rows.filter(**self.attempt_filter())
        won = rows.update(**changes)
        self.refresh_from_db()
        return bool(won)

    def is_stale_attempt(self) -> bool:
        """True when this instance claimed an attempt that was given up on: the sweeper
        requeued it, or another worker claimed the job again since."""
        return self.claimed_attempt is not None and (
            self.attempts != self.claimed_attempt or self.status == JobStatus.QUEUED
        )

    def claim(self) -> bool:
        """queued -> running. False when another worker took it or it was cancelled."""
        now = timezone.now()
        won = self._transition(
            allowed=(JobStatus.QUEUED,),
            status=JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            attempts=F("attempts") + 1,
            message="Started.",
        )
        if won:
            # Read back after the UPDATE: the attempt this worker won (a concurrent claimer
            # lost on the status guard, so nobody else moved ``attempts`` in between).
            self.claimed_attempt = self.attempts
            _claim_announce(self)
        return won

    def report(self, *, progress: int | None = None, message: str | None = None) -> bool:
        """Write progress and heartbeat. False once the job is no longer running (stop work)."""
        changes: dict = {"heartbeat_at": timezone.now()}
        if progress is not None:
            changes["progress"] = max(0, min(100, int(progress)))
        if message is not None:
            changes["message"] = message[:500]
        still_running = self._transition(allowed=(JobStatus.RUNNING,), fenced=True, **changes)
        if not still_running and self.is_stale_attempt():
            logger.warning(
                "%s %s: attempt %s was given up on (the row is at attempt %s, %s); it stops",
                self.label(),
                self.pk,
                self.claimed_attempt,
                self.attempts,
                self.status,
            )
        return still_running

    def succeed(self, *, message: str = "Finished.") -> bool:
        won = self._transition(
            allowed=(JobStatus.RUNNING,),
            fenced=True,
            status=JobStatus.SUCCEEDED,
            progress=100,
            message=message[:500],
            finished_at=timezone.now(),
        )
        if not won and self.is_stale_attempt():
            logger.warning(
                "%s %s: attempt %s finished after it was given up on (the row is at attempt "
                "%s); its success was not recorded",
                self.label(),
                self.pk,
                self.claimed_attempt,
                self.attempts,
            )
        return won

    def fail(self, *, error: str) -> bool:
        """running or queued -> failed, with a sentence the user can act on.

        Through an instance that claimed the job, only while that attempt is the latest."""
        won = self._transition(
            # A claiming worker fails only its own running attempt, never a requeued row.
            allowed=ACTIVE_STATUSES if self.claimed_attempt is None else (JobStatus.RUNNING,),
            fenced=True,
            status=JobStatus.FAILED,
            error_message=error,
            message="Failed.",
            finished_at=timezone.now(),
        )
        if not won and self.is_stale_attempt():
            logger.warning(
                "%s %s: attempt %s failed after it was given up on (the row is at attempt %s); "
                "its failure was not recorded: %s",
                self.label(),
                self.pk,
                self.claimed_attempt,
                self.attempts,
                error[:200],
            )
        return won

    def cancel(self) -> bool:
        """queued or running -> cancelled; a running worker notices at its next report()."""
        return self._transition(
            allowed=ACTIVE_STATUSES,
            status=JobStatus.CANCELLED,
            message="Cancelled.",
            finished_at=timezone.now(),
        )

    def requeue(self, *, message: str) -> bool:
        """running -> queued, used when the worker running it was lost."""
        return self._transition(
            allowed=(JobStatus.RUNNING,), status=JobStatus.QUEUED, message=message[:500]
        )

    # --- queueing -------------------------------------------------------------------------------
    def task_queue(self) -> str | None:
        """The queue to publish on; None follows the task's own routing."""
        return None

    def enqueue(self, *, options: dict | None = None) -> None:
        """Publish the task for this row; raise BrokerUnavailable when the broker is down."""
        from lepton_web.celery import app, queue_name

        # Always this installation's queue name (CELERY_QUEUE_PREFIX), whatever the task's own
        # routing says, so a console sharing the broker never takes this message.
        options = {"queue": queue_name(self.task_queue() or "default"), **(options or {})}
        try:
            # Connect with one quick attempt first: kombu's own publish path retries the
            # connection for several seconds, which would hang the user's request.
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
                app.send_task(
                    self.task_name, args=[self.pk], retry=False, connection=connection, **options
                )
        except (BrokerOperationalError, OSError) as exc:
            logger.warning("Could not publish %s %s: %s", self.label(), self.pk, exc)
            raise BrokerUnavailable() from exc

    def enqueue_or_delete(self) -> None:
        """Publish the task for this committed row; when the broker is down, delete the row
        (nothing stays queued) and raise BrokerUnavailable."""
        try:
            self.enqueue()
        except BrokerUnavailable:
            self.delete()
            raise

    # --- recovery hook ---------------------------------------------------------------------------
    def abandoned_note(self) -> str:
        """What is left of the work when the sweeper gives up on it, said to the user."""
        return "Whatever it saved is kept; start it again to retry."

    def recover(self) -> str:
        """Called by the sweeper when this running job's heartbeat went silent.

        The default requeues the job so a worker resumes it, up to ``max_attempts`` starts, then
        fails it. Subclasses that cannot resume override this. Returns what was done.
        """
        if self.attempts >= self.max_attempts:
            self.fail(
                error=(
                    f"The worker running this {self.verbose_kind} stopped responding "
                    f"{self.attempts} times, so it was not restarted again. "
                    f"{self.abandoned_note()}"
                )
            )
            return "failed"
        if not self.requeue(
            message=f"The worker was lost; restarting (attempt {self.attempts + 1} of "
            f"{self.max_attempts})."
        ):
            return "skipped"
        try:
            self.enqueue()
        except BrokerUnavailable:
            # It stays queued; the next sweep publishes it again once the broker is back.
            return "queued"
        return "requeued"


# job_kept_alive beats for a job id whose claim happens later, on another instance, in the
# same thread: the claim announces its attempt here so that heartbeat is fenced as well.
_claim_watchers = threading.local()


def _claim_announce(job: Job) -> None:
    for watched in getattr(_claim_watchers, "jobs", ()):
        # The first claim only: one task claims its job once.
        if type(watched) is type(job) and watched.pk == job.pk and watched.claimed_attempt is None:
            watched.claimed_attempt = job.claimed_attempt


def job_models() -> list[type[Job]]:
    """Every concrete job type installed in this project."""
    return [m for m in apps.get_models() if issubclass(m, Job) and not m._meta.abstract]


def job_model_for_label(label: str) -> type[Job] | None:
    for model in job_models():
        if model.label() == label:
            return model
    return None


def job_create_and_enqueue(*, model: type[Job], **fields) -> Job:
    """Create a queued job row and publish its task; no row survives a broker failure."""
    with transaction.atomic():
        job = model.objects.create(**fields)
    job.enqueue_or_delete()
    return job


def jobs_sweep(
    *, stale_after_seconds: int | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Hand every running job whose heartbeat went silent to its type's recovery hook.

    Also republishes jobs left queued for longer than JOB_REPUBLISH_AFTER_SECONDS: their message
    may have been lost with a killed worker on the filesystem broker, taken by a worker that
    could not run it, or never sent while the broker was down. Publishing twice is safe (a task
    only works on a job it can claim), and the copy expires after the same window, so a job that
    only waits for a busy worker gathers at most one live copy. ``now`` is for tests.
    """
    now = now or timezone.now()
    stale_after = stale_after_seconds or settings.JOB_STALE_AFTER_SECONDS
    cutoff = now - timedelta(seconds=stale_after)
    republish_after = max(stale_after, settings.JOB_REPUBLISH_AFTER_SECONDS)
    republish_cutoff = now - timedelta(seconds=republish_after)
    outcome: dict[str, int] = {}
    for model in job_models():
        silent = model.objects.filter(status=JobStatus.RUNNING).filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
        )
        for job in silent:
            result = job.recover()
            logger.warning("Sweeper: %s %s went silent -> %s", model.label(), job.pk, result)
            outcome[result] = outcome.get(result, 0) + 1
        forgotten = model.objects.filter(status=JobStatus.QUEUED, updated_at__lt=republish_cutoff)
        for job in forgotten:
            try:
                job.enqueue(options={"expires": republish_after})
            except BrokerUnavailable:
                break
            model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(updated_at=now)
            outcome["republished"] = outcome.get("republished", 0) + 1
    return outcome


_sweeper_stop = threading.Event()


def jobs_sweeper_start(*, interval_seconds: float | None = None) -> threading.Thread:
    """Sweep every JOB_SWEEP_INTERVAL_SECONDS from a daemon thread of this (worker) process.

    A thread, not a beat task on the default queue: a sweep must not wait behind imports that
    keep every default worker busy. Every worker sweeps; sweeps are safe to overlap because each
    transition is a guarded UPDATE.
    """
    interval = interval_seconds or settings.JOB_SWEEP_INTERVAL_SECONDS
    _sweeper_stop.clear()

    def loop() -> None:
        while not _sweeper_stop.wait(interval):
            try:
                jobs_sweep()
            except Exception:  # a database or broker blip: sweep again next time
                logger.exception("Sweeping silent jobs failed")
            finally:
                connection.close()  # this thread's own connection

    thread = threading.Thread(target=loop, name="jobs-sweeper", daemon=True)
    thread.start()
    return thread


def jobs_sweeper_stop() -> None:
    _sweeper_stop.set()


@contextmanager
def job_heartbeat(
    job: Job, *, interval_seconds: float | None = None, wait_for_claim: bool = False
) -> Iterator[Callable[[], bool]]:
    """Keep ``heartbeat_at`` fresh from a background thread while a long step runs.

    A thread, not the job's own loop, so a step that holds the CPU for a long time (loading a
    model, tokenising, a slow batch, uploading an artifact) still beats: the sweeper's short
    silence window stays free of false alarms.

    Yields a function that says whether the job should stop (cancelled or no longer running).
    A killed process takes the thread with it, which is exactly what the sweeper detects.

    Through an instance that claimed the job, only that attempt's row beats: a worker that was
    only paused while the sweeper gave its job to another worker never keeps the new attempt's
    heartbeat fresh (the new worker's own beat must be what says it is alive). With
    ``wait_for_claim`` (job_kept_alive) nothing is written until the claim made in this thread
    announces the attempt.
    """
    interval = interval_seconds or settings.JOB_HEARTBEAT_INTERVAL_SECONDS
    stop = threading.Event()
    should_stop = threading.Event()
    model = type(job)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                if wait_for_claim and job.claimed_attempt is None:
                    continue  # not claimed yet (or never): no row of ours to keep alive
                try:
                    alive = (
                        model.objects.filter(pk=job.pk, status=JobStatus.RUNNING)
                        .filter(**job.attempt_filter())
                        .update(heartbeat_at=timezone.now())
                    )
                except Exception as exc:  # a database blip (or SQLite's lock): beat again
                    logger.warning("Heartbeat of %s %s failed: %s", job.label(), job.pk, exc)
                    connection.close()
                    continue
                if not alive:
                    should_stop.set()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{job.label()}-{job.pk}", daemon=True)
    thread.start()
    try:
        yield should_stop.is_set
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


@contextmanager
def job_kept_alive(model: type[Job], job_id: int) -> Iterator[None]:
    """Beat for job ``job_id`` of ``model`` while this block runs, from its claim to its end.

    For a Celery task around a service that claims the job in this thread: the beat starts at
    that claim and touches only the attempt it won, so beating before the claim (or after the
    job ended, or after the job was given to another worker) changes nothing.
    """
    watched = model(pk=job_id)
    jobs = getattr(_claim_watchers, "jobs", None)
    if jobs is None:
        jobs = _claim_watchers.jobs = []
    jobs.append(watched)
    try:
        with job_heartbeat(watched, wait_for_claim=True):
            yield
    finally:
        jobs.remove(watched)


@contextmanager
def job_progress_aside(job: Job | None) -> Iterator[Callable[[int, str], None]]:
    """Report progress from a separate database connection while this one holds a transaction.

    Work that must become visible all at once (a split, a cleaning fix) writes in one
    transaction, where ``job.report()`` would stay invisible until the commit. This yields
    ``report(progress, message)``, which hands the values to a thread with its own connection;
    it writes them at once, so the progress bar moves and the heartbeat stays fresh. Don't
    update the job row on this connection inside the transaction before leaving this block: the
    thread's UPDATE would wait for that row lock. SQLite allows one writer at a time, so there
    the reports are dropped (its datasets are small) and the bar moves at the commit. Without a
    job (the same work called directly) reports go nowhere.
    """
    if job is None or connection.vendor == "sqlite":
        yield lambda progress, message: None
        return
    pending: queue.SimpleQueue = queue.SimpleQueue()
    model = type(job)

    def write() -> None:
        try:
            while (item := pending.get()) is not None:
                progress, message = item
                model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).filter(
                    **job.attempt_filter()
                ).update(
                    progress=max(0, min(100, int(progress))),
                    message=message[:500],
                    heartbeat_at=timezone.now(),
                    updated_at=timezone.now(),
                )
        except Exception:
            logger.exception("Progress of %s %s could not be written", job.label(), job.pk)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=write, name=f"progress-{job.label()}-{job.pk}", daemon=True)
    thread.start()
    try:
        yield lambda progress, message: pending.put((progress, message))
    finally:
        pending.put(None)
        thread.join(timeout=30)
