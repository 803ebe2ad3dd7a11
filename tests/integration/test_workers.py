"""Real worker processes on the real broker take job rows from queued to finished."""

import json
import os
import subprocess
import sys
import time

import pytest
from django.utils import timezone

from lepton_web.jobs import JobStatus, jobs_sweep
from lepton_web.models import WorkerCheck
from lepton_web.services import worker_check_start
from tests.conftest import ROOT, WorkerProcess, worker_env

pytestmark = pytest.mark.integration


def watch(
    job: WorkerCheck, *, until: tuple[str, ...], timeout: float = 60
) -> list[tuple[str, int]]:
    """Poll the row; return every distinct (status, progress) seen until it reaches ``until``."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        state = (job.status, job.progress)
        if not seen or seen[-1] != state:
            seen.append(state)
        if job.status in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"Job stuck at {seen[-1] if seen else None}; seen {seen}")


def test_redis_worker_takes_job_from_queued_to_succeeded_with_progress(redis_worker, make_user):
    worker = redis_worker()
    user = make_user("analyst")

    job = worker_check_start(user=user, queue="gpu", steps=4)
    WorkerCheck.objects.filter(pk=job.pk).update(step_seconds=0.4)
    seen = watch(job, until=(JobStatus.SUCCEEDED, JobStatus.FAILED))

    assert seen[-1] == (JobStatus.SUCCEEDED, 100)
    in_between = [p for status, p in seen if status == JobStatus.RUNNING and 0 < p < 100]
    assert len(in_between) >= 2, seen
    assert in_between == sorted(in_between)
    job.refresh_from_db()
    assert job.worker_hostname == worker.hostname
    assert job.attempts == 1
    assert job.message.startswith(f"{worker.hostname} answered on the gpu queue")


def test_worker_killed_mid_job_is_noticed_and_the_job_resumes_on_another_worker(
    redis_worker, make_user
):
    user = make_user("analyst")
    first = redis_worker()
    job = worker_check_start(user=user, queue="default", steps=40)
    WorkerCheck.objects.filter(pk=job.pk).update(step_seconds=0.5)
    watch(job, until=(JobStatus.RUNNING,))
    while job.progress < 5:
        job.refresh_from_db()
        time.sleep(0.1)

    first.kill()  # kill -9 of the whole worker: no chance to say goodbye
    time.sleep(1.5)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING  # nobody knows yet

    outcome = jobs_sweep(stale_after_seconds=1)

    assert outcome == {"requeued": 1}
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert "worker was lost" in job.message
    WorkerCheck.objects.filter(pk=job.pk).update(steps=2, step_seconds=0.1)
    second = redis_worker()
    watch(job, until=(JobStatus.SUCCEEDED,))
    job.refresh_from_db()
    assert job.attempts == 2
    assert job.worker_hostname == second.hostname


def test_job_whose_worker_keeps_dying_fails_with_a_reason(redis_worker, make_user):
    user = make_user("analyst")
    job = worker_check_start(user=user, queue="default", steps=3)
    WorkerCheck.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        attempts=job.max_attempts,
        heartbeat_at=timezone.now() - timezone.timedelta(minutes=10),
    )

    assert jobs_sweep(stale_after_seconds=60) == {"failed": 1}

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error_message.startswith(
        "The worker running this worker check stopped responding 3 times"
    )


EMBEDDED_SCRIPT = """
import json, time
from lepton_web.accounts import user_create
from lepton_web.models import WorkerCheck
from lepton_web.services import worker_check_start
user, _ = user_create(username="analyst1", role="analyst")
job = worker_check_start(user=user, queue="gpu", steps=4)
WorkerCheck.objects.filter(pk=job.pk).update(step_seconds=0.4)
seen, deadline = [], time.monotonic() + 60
while time.monotonic() < deadline:
    job.refresh_from_db()
    state = [job.status, job.progress]
    if not seen or seen[-1] != state:
        seen.append(state)
    if job.status in ("succeeded", "failed"):
        break
    time.sleep(0.05)
print("SEEN=" + json.dumps({"seen": seen, "worker": job.worker_hostname}))
"""


def test_embedded_default_runs_a_job_with_sqlite_and_the_filesystem_broker(tmp_path):
    """No environment at all: SQLite under var/, filesystem broker, a real worker process."""
    env = worker_env(LEPTON_VAR_DIR=str(tmp_path / "var"))
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "PYTEST_VERSION"):
        env.pop(name, None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    worker = WorkerProcess(env=env, queues="default,gpu", log_path=tmp_path / "worker.log")
    try:
        result = subprocess.run(
            [*manage, "shell", "-c", EMBEDDED_SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.stop()
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("SEEN="))
    report = json.loads(line.removeprefix("SEEN="))
    seen = report["seen"]
    assert seen[-1] == ["succeeded", 100], (seen, worker.log())
    assert any(status == "running" and 0 < p < 100 for status, p in seen), seen
    assert report["worker"] == worker.hostname
    assert (tmp_path / "var" / "lepton.sqlite3").exists()
    assert not os.listdir(tmp_path / "var" / "broker" / "queue")
