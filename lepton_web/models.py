from django.conf import settings
from django.db import models
from django.utils import timezone

from lepton_web.jobs import Job


class WorkerPresence(models.Model):
    """A Celery worker announcing itself; the dashboard reads these instead of broadcasting.

    Each worker refreshes ``last_seen_at`` every few seconds from a thread in its main process,
    so presence works the same on Redis and on the serverless filesystem broker.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname

    @property
    def is_online(self) -> bool:
        window = settings.WORKER_ONLINE_WINDOW_SECONDS
        return self.stopped_at is None and (
            (timezone.now() - self.last_seen_at).total_seconds() <= window
        )


class WorkerCheck(Job):
    """A diagnostic job: proves that a worker consuming ``queue`` picks up work and reports.

    The dashboard's "Check workers" button starts one per queue; operators use it after adding
    a GPU machine, and the integration tests use it to drive the job machinery end to end.
    """

    task_name = "lepton_web.tasks.worker_check_execute_task"
    access_resource = "worker_check"
    verbose_kind = "worker check"

    class Queue(models.TextChoices):
        DEFAULT = "default", "default"
        GPU = "gpu", "gpu"

    queue = models.CharField(max_length=32, choices=Queue.choices, default=Queue.DEFAULT)
    steps = models.PositiveSmallIntegerField(default=5)
    step_seconds = models.FloatField(default=0.3)
    worker_hostname = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="worker_checks",
    )

    class Meta(Job.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Worker check #{self.pk} on {self.queue}"

    def task_queue(self) -> str:
        return self.queue
