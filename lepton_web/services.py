"""Writes of the console core: worker presence and the worker-check diagnostic job."""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from lepton_web.access import access_check
from lepton_web.jobs import ACTIVE_STATUSES, BrokerUnavailable
from lepton_web.models import WorkerCheck, WorkerPresence

logger = logging.getLogger(__name__)

_presence_stop = threading.Event()


def _presence_write(*, hostname: str, queues: list[str], started: bool) -> None:
    now = timezone.now()
    defaults = {"queues": queues, "pid": os.getpid(), "last_seen_at": now, "stopped_at": None}
    if started:
        defaults["started_at"] = now
    WorkerPresence.objects.update_or_create(hostname=hostname, defaults=defaults)


def worker_presence_start(*, hostname: str, queues: list[str]) -> threading.Thread:
    """Announce this worker and keep its ``last_seen_at`` fresh from a daemon thread.

    All database work happens on that thread, so the worker's main process holds no connection
    that prefork children could inherit.
    """
    interval = max(1, settings.WORKER_ONLINE_WINDOW_SECONDS // 3)
    _presence_stop.clear()

    def loop() -> None:
        first = True
        while True:
            try:
                _presence_write(hostname=hostname, queues=queues, started=first)
                first = False
            except Exception:  # keep announcing after a database blip
                logger.exception("Could not record presence of worker %s", hostname)
            finally:
                connection.close()
            if _presence_stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="worker-presence", daemon=True)
    thread.start()
    return thread


def worker_presence_stop(*, hostname: str) -> None:
    _presence_stop.set()
    try:
        WorkerPresence.objects.filter(hostname=hostname).update(stopped_at=timezone.now())
    except Exception:
        logger.exception("Could not record shutdown of worker %s", hostname)


def _pending_worker_check(*, user: AbstractBaseUser, queue: str) -> WorkerCheck | None:
    return (
        WorkerCheck.objects.filter(created_by=user, queue=queue, status__in=ACTIVE_STATUSES)
        .order_by("id")
        .first()
    )


def worker_check_start(*, user: AbstractBaseUser, queue: str, steps: int = 5) -> WorkerCheck:
    """Queue a diagnostic job on ``queue``; raises BrokerUnavailable (nothing saved) if down.

    A user has at most one check waiting or running per queue, so nobody can fill a queue with
    checks that hold up real jobs; the next one can start once it has finished.
    """
    access_check(user, "worker_check", "create")
    with transaction.atomic():
        # Serializes one user's starts, so two requests at once cannot both pass the check.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        pending = _pending_worker_check(user=user, queue=queue)
        if pending is not None:
            raise ValidationError(
                f"Your worker check #{pending.pk} on the {queue} queue is still {pending.status}. "
                "Wait for it to finish before starting another one there."
            )
        job = WorkerCheck.objects.create(queue=queue, steps=steps, created_by=user)
    # Published after the commit, so the worker finds the row.
    job.enqueue_or_delete()
    return job


def worker_checks_start_all(*, user: AbstractBaseUser) -> list[WorkerCheck]:
    """One check per queue where the user has none waiting; if the broker fails part-way,
    none of them is kept. Raises ValidationError when every queue already has one."""
    started: list[WorkerCheck] = []
    queues = [q for q in WorkerCheck.Queue.values if not _pending_worker_check(user=user, queue=q)]
    if not queues:
        raise ValidationError(
            "Your worker checks on every queue are still waiting or running. "
            "Wait for them to finish before starting more."
        )
    try:
        for queue in queues:
            started.append(worker_check_start(user=user, queue=queue))
    except BrokerUnavailable:
        WorkerCheck.objects.filter(pk__in=[job.pk for job in started]).delete()
        raise
    return started


def worker_check_execute(*, job_id: int, worker_hostname: str) -> WorkerCheck | None:
    """Run the check: a few timed steps, each reporting progress; safe to run twice."""
    job = WorkerCheck.objects.filter(pk=job_id).first()
    if job is None or not job.claim():
        return None  # already taken, finished or cancelled: never a second copy
    WorkerCheck.objects.filter(pk=job.pk).update(worker_hostname=worker_hostname)
    started = time.monotonic()
    for step in range(1, job.steps + 1):
        time.sleep(job.step_seconds)
        if not job.report(
            progress=round(100 * step / (job.steps + 1)),
            message=f"Step {step} of {job.steps} on {worker_hostname}.",
        ):
            return job
    elapsed = time.monotonic() - started
    job.succeed(message=f"{worker_hostname} answered on the {job.queue} queue in {elapsed:.1f} s.")
    return job
