"""The Celery app: two queues, routing per task, and reliability settings chosen on purpose.

- ``default``: imports, cleaning, batch work, maintenance. Short tasks that are idempotent opt
  into ``acks_late`` one by one (a crash then redelivers them, and running twice is harmless).
- ``gpu``: training and evaluation, one worker per GPU with prefetch 1, so a worker never holds
  a second run in its buffer while the first one trains for hours. These tasks do *not* use
  ``acks_late``: Redis redelivers an unacknowledged message once ``visibility_timeout`` passes,
  even while the first copy still runs. Recovery of long jobs is ours instead: each job row
  writes a heartbeat (a thread, every few seconds) and the sweeper (a thread in every worker,
  every few seconds) requeues or fails silent jobs.

Queue and exchange names carry ``CELERY_QUEUE_PREFIX`` (from ``LEPTON_INSTANCE``), so several
consoles can share one Redis server.
"""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")

app = Celery("lepton_web")
app.config_from_object("django.conf:settings", namespace="CELERY")


def queue_name(logical: str) -> str:
    """This installation's name of queue ``default`` or ``gpu`` (CELERY_QUEUE_PREFIX first).

    Consoles sharing one Redis server then never take each other's messages: a worker of
    another console would find no such job in its database and drop the message.
    """
    from django.conf import settings

    return f"{settings.CELERY_QUEUE_PREFIX}{logical}"


def logical_queue_name(name: str) -> str | None:
    """``default``/``gpu`` for this installation's queue ``name``; None for another's."""
    from django.conf import settings

    prefix = settings.CELERY_QUEUE_PREFIX
    return name.removeprefix(prefix) if name.startswith(prefix) else None


def _queue(logical: str) -> Queue:
    # The exchange is named per installation too: on Redis, bindings are kept per exchange
    # name, so two consoles binding "default" would each receive the other's messages.
    name = queue_name(logical)
    return Queue(name, Exchange(name), routing_key=name)


app.conf.update(
    task_queues=(_queue("default"), _queue("gpu")),
    task_default_queue=queue_name("default"),
    task_default_exchange=queue_name("default"),
    task_default_routing_key=queue_name("default"),
    # Per-task routing lives beside each task (``@shared_task(queue=queue_name(...))``); these
    # patterns catch any training/evaluation task that forgets to name its queue.
    task_routes={
        "training_app.tasks.*": {"queue": queue_name("gpu")},
        "models_app.tasks.model_version_evaluate*": {"queue": queue_name("gpu")},
    },
    # One message at a time per worker process: long jobs must not sit in a busy worker's buffer.
    worker_prefetch_multiplier=1,
    # Default limits for any task that does not set its own; long tasks set larger ones.
    task_soft_time_limit=30 * 60,
    task_time_limit=35 * 60,
    # Results live on job rows in the database, not in a result backend.
    task_ignore_result=True,
    task_acks_late=False,
    # Idempotent acks_late tasks come back when their pool process dies mid-task.
    task_reject_on_worker_lost=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # Publishing from a web request must fail fast when the broker is down, so the user sees
    # a clear message instead of a hung page (see lepton_web.jobs.job_enqueue).
    broker_connection_timeout=3,
    broker_connection_max_retries=1,
    worker_send_task_events=False,
    # Silent jobs are swept by a thread in every worker (lepton_web.jobs.jobs_sweeper_start).
    beat_schedule={
        "expire-training-checkpoints": {
            "task": "training_app.tasks.training_checkpoints_expire_task",
            "schedule": 3600.0,
            # On the gpu queue: checkpoints live on the gpu workers' disks.
            "options": {"queue": queue_name("gpu"), "expires": 3000},
        },
        "advance-hyperparameter-searches": {
            "task": "training_app.tasks.searches_advance_task",
            "schedule": 60.0,
            # On the gpu queue: a search that finishes registers its best trial's model folder.
            "options": {"queue": queue_name("gpu"), "expires": 50},
        },
        "advance-retrain-loops": {
            "task": "training_app.tasks.retrain_loops_sweep_task",
            "schedule": 60.0,
            # Default queue: a loop's pre-labels run on the default workers.
            "options": {"queue": queue_name("default"), "expires": 50},
        },
    },
    timezone="UTC",
)
app.autodiscover_tasks()


@worker_ready.connect
def _on_worker_ready(sender, **kwargs) -> None:
    """Announce the worker in the database and sweep jobs a crashed predecessor left behind.

    The filesystem broker loses a message when the whole worker is killed, so the sweep must
    also run at start-up, not only on beat's schedule.
    """
    from lepton_web.jobs import jobs_sweeper_start
    from lepton_web.services import worker_presence_start

    # Presence lists the queues by their plain names (default, gpu), as the dashboard asks.
    names = (logical_queue_name(q.name) for q in sender.task_consumer.queues)
    worker_presence_start(hostname=sender.hostname, queues=sorted(n for n in names if n))
    jobs_sweep_task = app.tasks["lepton_web.tasks.jobs_sweep_task"]
    jobs_sweep_task.apply_async(queue=queue_name("default"))
    jobs_sweeper_start()


@worker_shutdown.connect
def _on_worker_shutdown(sender, **kwargs) -> None:
    from lepton_web.jobs import jobs_sweeper_stop
    from lepton_web.services import worker_presence_stop

    jobs_sweeper_stop()
    worker_presence_stop(hostname=sender.hostname)
