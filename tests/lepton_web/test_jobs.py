"""The Job base (guarded transitions, sweeper, recovery), driven through WorkerCheck."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from lepton_web.jobs import BrokerUnavailable, jobs_sweep
from lepton_web.models import WorkerCheck
from lepton_web.services import worker_check_execute, worker_check_start
from tests.conftest import broker_for_this_process

DOWN_BROKER_URL = "redis://127.0.0.1:1/0"
BROKER_UNAVAILABLE = (
    "The task queue (Celery broker) cannot be reached, so the job was not started. Check "
    "that the broker is running, then try again."
)
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ROW_FIELDS = (
    "status",
    "progress",
    "message",
    "error_message",
    "attempts",
    "heartbeat_at",
    "started_at",
    "finished_at",
    "updated_at",
)


def row(job: WorkerCheck) -> dict:
    return WorkerCheck.objects.filter(pk=job.pk).values(*ROW_FIELDS).get()


def running_check(**fields) -> WorkerCheck:
    """A check claimed the real way (attempts 1, fresh heartbeat)."""
    job = WorkerCheck.objects.create(**fields)
    assert job.claim()
    return job


def silence(job: WorkerCheck, *, seconds: int = 3600, **fields) -> None:
    WorkerCheck.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=seconds), **fields
    )


@pytest.fixture(autouse=True)
def _stale_after_90_seconds(settings):
    settings.JOB_STALE_AFTER_SECONDS = 90


# --- guarded transitions ----------------------------------------------------------------------
def test_claim_moves_a_queued_job_to_running(db):
    job = WorkerCheck.objects.create()

    assert job.claim() is True

    job.refresh_from_db()
    assert (job.status, job.attempts, job.message) == ("running", 1, "Started.")
    assert job.started_at is not None
    assert job.heartbeat_at == job.started_at
    assert job.finished_at is None


def test_claim_returns_false_the_second_time_and_changes_nothing(db):
    job = running_check()
    before = row(job)

    assert job.claim() is False

    assert row(job) == before


def test_each_claim_counts_one_attempt(db):
    job = running_check()
    assert job.requeue(message="Lost.")

    assert job.claim() is True

    assert row(job)["attempts"] == 2


def test_report_returns_false_after_cancel_and_changes_nothing(db):
    job = running_check()
    assert job.cancel()
    before = row(job)

    assert job.report(progress=50, message="Step 1.") is False

    assert row(job) == before


def test_report_writes_progress_message_and_heartbeat(db):
    job = running_check()
    silence(job)

    assert job.report(progress=40, message="Step 2 of 5.") is True

    job.refresh_from_db()
    assert (job.progress, job.message) == (40, "Step 2 of 5.")
    assert timezone.now() - job.heartbeat_at < timedelta(seconds=5)


@pytest.mark.parametrize(("reported", "stored"), [(150, 100), (-20, 0), (100, 100), (0, 0)])
def test_report_clamps_progress_to_0_through_100(db, reported, stored):
    job = running_check()

    job.report(progress=reported)

    assert row(job)["progress"] == stored


def test_report_keeps_only_the_first_500_characters_of_a_message(db):
    job = running_check()

    job.report(message="x" * 600)

    assert row(job)["message"] == "x" * 500


# transition -> the statuses it may leave; from every other status it loses and changes nothing.
ALLOWED_FROM = {
    "claim": {"queued"},
    "report": {"running"},
    "succeed": {"running"},
    "fail": {"queued", "running"},
    "cancel": {"queued", "running"},
    "requeue": {"running"},
}
LANDS_IN = {
    "claim": "running",
    "report": "running",
    "succeed": "succeeded",
    "fail": "failed",
    "cancel": "cancelled",
    "requeue": "queued",
}
CALL = {
    "claim": lambda job: job.claim(),
    "report": lambda job: job.report(progress=10),
    "succeed": lambda job: job.succeed(message="Done."),
    "fail": lambda job: job.fail(error="It broke."),
    "cancel": lambda job: job.cancel(),
    "requeue": lambda job: job.requeue(message="Lost."),
}


@pytest.mark.parametrize(
    ("transition", "status"),
    [(t, s) for t, allowed in ALLOWED_FROM.items() for s in STATUSES if s in allowed],
)
def test_transition_wins_from_an_allowed_status(db, transition, status):
    job = WorkerCheck.objects.create(status=status)

    assert CALL[transition](job) is True

    assert row(job)["status"] == LANDS_IN[transition]


@pytest.mark.parametrize(
    ("transition", "status"),
    [(t, s) for t, allowed in ALLOWED_FROM.items() for s in STATUSES if s not in allowed],
)
def test_transition_loses_from_any_other_status_and_changes_nothing(db, transition, status):
    job = WorkerCheck.objects.create(status=status, progress=30, message="Before.")
    before = row(job)

    assert CALL[transition](job) is False

    assert row(job) == before


def test_succeed_sets_progress_100_message_and_finish_time(db):
    job = running_check()

    job.succeed(message="All good.")

    job.refresh_from_db()
    assert (job.status, job.progress, job.message) == ("succeeded", 100, "All good.")
    assert job.finished_at is not None


def test_fail_keeps_the_error_for_the_user(db):
    job = running_check()

    job.fail(error="The CSV has no text column.")

    job.refresh_from_db()
    assert (job.status, job.message, job.error_message) == (
        "failed",
        "Failed.",
        "The CSV has no text column.",
    )
    assert job.finished_at is not None


# --- sweeper --------------------------------------------------------------------------------------
def test_sweep_requeues_a_silent_job_with_attempts_left_and_publishes_it(db, queue_redis):
    url, queue = queue_redis
    job = running_check()
    silence(job)

    with broker_for_this_process(url):
        outcome = jobs_sweep()

    assert outcome == {"requeued": 1}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.message) == (
        "queued",
        1,
        "The worker was lost; restarting (attempt 2 of 3).",
    )
    assert queue.llen("default") == 1


def test_sweep_requeues_a_job_that_never_wrote_a_heartbeat(db, queue_redis):
    url, queue = queue_redis
    job = running_check()
    WorkerCheck.objects.filter(pk=job.pk).update(heartbeat_at=None)

    with broker_for_this_process(url):
        outcome = jobs_sweep()

    assert outcome == {"requeued": 1}
    assert row(job)["status"] == "queued"
    assert queue.llen("default") == 1


def test_sweep_publishes_a_requeued_gpu_check_on_the_gpu_queue(db, queue_redis):
    url, queue = queue_redis
    job = running_check(queue="gpu")
    silence(job)

    with broker_for_this_process(url):
        jobs_sweep()

    assert (queue.llen("gpu"), queue.llen("default")) == (1, 0)


def test_sweep_fails_a_silent_job_that_used_all_its_attempts(db, queue_redis):
    url, queue = queue_redis
    job = running_check()
    silence(job, attempts=3)

    with broker_for_this_process(url):
        outcome = jobs_sweep()

    assert outcome == {"failed": 1}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_message) == (
        "failed",
        3,
        "The worker running this worker check stopped responding 3 times, so it was not "
        "restarted again. Whatever it saved is kept; start it again to retry.",
    )
    assert queue.llen("default") == 0


def test_sweep_leaves_a_running_job_with_a_fresh_heartbeat_alone(db, queue_redis):
    url, queue = queue_redis
    job = running_check()
    silence(job, seconds=5)
    before = row(job)

    with broker_for_this_process(url):
        outcome = jobs_sweep()

    assert outcome == {}
    assert row(job) == before
    assert queue.llen("default") == 0


def test_sweep_republishes_a_queued_job_left_untouched_past_the_stale_window(db, queue_redis):
    url, queue = queue_redis
    job = WorkerCheck.objects.create()
    WorkerCheck.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    with broker_for_this_process(url):
        outcome = jobs_sweep()

    assert outcome == {"republished": 1}
    assert row(job)["status"] == "queued"
    assert queue.llen("default") == 1


def test_sweep_leaves_a_job_that_is_only_waiting_for_a_busy_worker(db, queue_redis):
    url, queue = queue_redis
    job = WorkerCheck.objects.create()
    WorkerCheck.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=30))

    with broker_for_this_process(url):
        outcome = jobs_sweep()

    assert outcome == {}
    assert queue.llen("default") == 0


def test_sweep_keeps_a_silent_job_queued_when_the_broker_is_down(db):
    job = running_check()
    silence(job)

    with broker_for_this_process(DOWN_BROKER_URL):
        outcome = jobs_sweep()

    assert outcome == {"queued": 1}
    assert row(job)["status"] == "queued"


# --- worker_check_execute -----------------------------------------------------------------------
def test_execute_runs_a_check_to_success_and_names_the_worker(db):
    job = WorkerCheck.objects.create(steps=2, step_seconds=0)

    result = worker_check_execute(job_id=job.pk, worker_hostname="w1@gpu-box")

    assert result.pk == job.pk
    job.refresh_from_db()
    assert (job.status, job.progress, job.attempts, job.worker_hostname) == (
        "succeeded",
        100,
        1,
        "w1@gpu-box",
    )
    assert re.fullmatch(r"w1@gpu-box answered on the default queue in \d+\.\d s\.", job.message)


def test_execute_twice_on_the_same_id_does_not_run_a_second_copy(db):
    job = WorkerCheck.objects.create(steps=2, step_seconds=0)
    worker_check_execute(job_id=job.pk, worker_hostname="w1@host")
    before = row(job)

    assert worker_check_execute(job_id=job.pk, worker_hostname="w2@host") is None

    assert row(job) == before
    assert WorkerCheck.objects.get(pk=job.pk).worker_hostname == "w1@host"


def test_execute_does_not_start_a_cancelled_check(db):
    job = WorkerCheck.objects.create(steps=2, step_seconds=0)
    job.cancel()
    before = row(job)

    assert worker_check_execute(job_id=job.pk, worker_hostname="w1@host") is None

    assert row(job) == before


def test_execute_of_a_deleted_check_does_nothing(db):
    assert worker_check_execute(job_id=987654, worker_hostname="w1@host") is None


# --- broker down ----------------------------------------------------------------------------------
def test_start_with_the_broker_down_raises_and_keeps_no_row(make_user):
    user = make_user("analyst")

    with broker_for_this_process(DOWN_BROKER_URL), pytest.raises(BrokerUnavailable) as raised:
        worker_check_start(user=user, queue="default")

    assert str(raised.value) == BROKER_UNAVAILABLE
    assert not WorkerCheck.objects.exists()


def test_check_workers_button_with_the_broker_down_flashes_the_error_and_keeps_no_row(client_as):
    client = client_as("analyst")

    with broker_for_this_process(DOWN_BROKER_URL):
        response = client.post("/worker-checks/", follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert response.status_code == 200
    assert (
        f'<div class="flash flash-error" role="status">{BROKER_UNAVAILABLE}</div>'
        in response.content.decode()
    )
    assert not WorkerCheck.objects.exists()


def test_api_start_with_the_broker_down_answers_503_and_keeps_no_row(api_client_as):
    api = api_client_as("analyst")

    with broker_for_this_process(DOWN_BROKER_URL):
        response = api.post("/api/v1/worker-checks/", {"queue": "default"}, format="json")

    assert response.status_code == 503
    assert response.json() == {"detail": BROKER_UNAVAILABLE, "errors": {}}
    assert not WorkerCheck.objects.exists()
