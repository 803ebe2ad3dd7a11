"""A lost worker is noticed within 30 s (issue 9 item 20) and queues are named per installation
(item 21). Clocks are explicit: the sweep is driven with ``now=``, never by waiting."""

import json
import threading
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from lepton_web.celery import app as celery_app
from lepton_web.celery import logical_queue_name, queue_name
from lepton_web.jobs import job_heartbeat, jobs_sweep, jobs_sweeper_start, jobs_sweeper_stop
from lepton_web.models import WorkerCheck
from tests.conftest import broker_for_this_process


@pytest.fixture
def broker(redis_url):
    """This test run's own Redis database (TEST_REDIS_URL), emptied before and after."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    with broker_for_this_process(redis_url):
        yield client
    client.flushdb()


def running_check(**fields) -> WorkerCheck:
    job = WorkerCheck.objects.create(**fields)
    assert job.claim()
    job.refresh_from_db()
    return job


def messages(client, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


# --- detection time ---------------------------------------------------------------------------
def test_default_timings_notice_a_lost_worker_within_30_seconds():
    heartbeat = django_settings.JOB_HEARTBEAT_INTERVAL_SECONDS
    stale = django_settings.JOB_STALE_AFTER_SECONDS
    sweep = django_settings.JOB_SWEEP_INTERVAL_SECONDS

    # Worst case: the worker dies just before a beat, and the sweep runs just before the
    # silence reaches the threshold.
    assert (heartbeat, stale, sweep) == (3, 20, 5)
    assert stale + sweep <= 30
    # Several missed beats before a job counts as lost: one slow beat is never a false alarm.
    assert stale >= 6 * heartbeat


def test_a_job_silent_for_less_than_the_threshold_is_left_running(db, broker):
    job = running_check()

    outcome = jobs_sweep(now=job.heartbeat_at + timedelta(seconds=19))

    assert outcome == {}
    job.refresh_from_db()
    assert job.status == "running"
    assert broker.llen(queue_name("default")) == 0


def test_a_job_silent_past_the_threshold_is_requeued_by_the_next_sweep(db, broker):
    job = running_check()

    outcome = jobs_sweep(now=job.heartbeat_at + timedelta(seconds=21))

    assert outcome == {"requeued": 1}
    job.refresh_from_db()
    assert (job.status, job.message) == (
        "queued",
        "The worker was lost; restarting (attempt 2 of 3).",
    )
    assert broker.llen(queue_name("default")) == 1


def test_the_heartbeat_thread_keeps_beating_while_the_job_holds_the_cpu(transactional_db):
    job = running_check()
    WorkerCheck.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    before = WorkerCheck.objects.get(pk=job.pk).heartbeat_at

    beats = 0
    with job_heartbeat(job, interval_seconds=0.05):
        # Pure Python work that never sleeps or waits on I/O, as a tokenizer or a slow
        # step would; the deadline only bounds a broken test, it measures nothing.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sum(i * i for i in range(20_000))
            latest = WorkerCheck.objects.get(pk=job.pk).heartbeat_at
            if latest > before:
                beats += 1
                before = latest
                if beats == 3:
                    break

    assert beats == 3
    assert WorkerCheck.objects.get(pk=job.pk).status == "running"


def test_the_heartbeat_thread_survives_a_failed_write(transactional_db, monkeypatch):
    job = running_check()
    WorkerCheck.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    before = WorkerCheck.objects.get(pk=job.pk).heartbeat_at
    real_update = WorkerCheck.objects.filter(pk=job.pk).update.__func__
    failures = []

    def flaky_update(queryset, **changes):
        if not failures:
            failures.append(changes)
            raise RuntimeError("database is locked")
        return real_update(queryset, **changes)

    monkeypatch.setattr(type(WorkerCheck.objects.all()), "update", flaky_update)
    with job_heartbeat(job, interval_seconds=0.05):
        deadline = time.monotonic() + 60
        while WorkerCheck.objects.get(pk=job.pk).heartbeat_at == before:
            assert time.monotonic() < deadline, "the heartbeat stopped after one failed write"
            time.sleep(0.05)

    assert len(failures) == 1


def test_the_sweeper_thread_of_a_worker_requeues_a_silent_job(transactional_db, broker):
    job = running_check()
    WorkerCheck.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    thread = jobs_sweeper_start(interval_seconds=0.05)
    try:
        deadline = time.monotonic() + 60
        while WorkerCheck.objects.get(pk=job.pk).status != "queued":
            assert time.monotonic() < deadline, "the sweeper thread never swept"
            time.sleep(0.05)
    finally:
        jobs_sweeper_stop()
        thread.join(timeout=30)

    assert not thread.is_alive()
    assert broker.llen(queue_name("default")) == 1


# --- republishing ---------------------------------------------------------------------------------
def test_a_queued_job_nobody_took_for_a_minute_is_published_again_with_an_expiry(db, broker):
    job = WorkerCheck.objects.create()
    now = job.updated_at + timedelta(seconds=61)

    outcome = jobs_sweep(now=now)

    assert outcome == {"republished": 1}
    [message] = messages(broker, queue_name("default"))
    assert message["headers"]["id"]
    assert message["headers"]["expires"] is not None
    job.refresh_from_db()
    assert (job.status, job.updated_at) == ("queued", now)


def test_a_job_queued_for_less_than_a_minute_is_not_published_again(db, broker):
    job = WorkerCheck.objects.create()

    outcome = jobs_sweep(now=job.updated_at + timedelta(seconds=59))

    assert outcome == {}
    assert broker.llen(queue_name("default")) == 0


# --- queue names per installation -------------------------------------------------------------
def test_jobs_are_published_on_this_installations_queues(db, broker, settings):
    settings.CELERY_QUEUE_PREFIX = "lab-b."

    WorkerCheck.objects.create(queue="gpu").enqueue()
    WorkerCheck.objects.create(queue="default").enqueue()

    assert broker.llen("lab-b.gpu") == 1
    assert broker.llen("lab-b.default") == 1
    # Another console's workers (no prefix, or another one) see nothing.
    assert broker.llen("gpu") == broker.llen("default") == 0


def test_queue_names_map_back_to_plain_names_only_for_this_installation(settings):
    settings.CELERY_QUEUE_PREFIX = "lab-b."

    assert queue_name("gpu") == "lab-b.gpu"
    assert logical_queue_name("lab-b.gpu") == "gpu"
    assert logical_queue_name("lab-a.gpu") is None


def test_the_worker_consumes_queues_named_by_the_instance_setting():
    prefix = django_settings.CELERY_QUEUE_PREFIX
    names = {queue.name for queue in celery_app.conf.task_queues}
    exchanges = {queue.exchange.name for queue in celery_app.conf.task_queues}

    assert names == exchanges == {f"{prefix}default", f"{prefix}gpu"}
    assert celery_app.conf.task_default_queue == f"{prefix}default"


def test_every_dataset_job_beats_from_a_thread_from_its_claim_on(db, monkeypatch):
    from datasets_app import services as dataset_services
    from datasets_app.tasks import dataset_job_execute_task
    from tests.datasets_app.factories import DatasetFactory

    dataset = DatasetFactory()
    job = dataset.jobs.create(kind="report")
    threads_while_working: list[str] = []

    def slow_report(*, job_id):
        assert dataset.jobs.get(pk=job_id).claim()
        threads_while_working.extend(t.name for t in threading.enumerate())

    monkeypatch.setattr(dataset_services, "dataset_job_execute", slow_report)

    dataset_job_execute_task(job.pk)

    assert f"heartbeat-datasets_app.datasetjob-{job.pk}" in threads_while_working
