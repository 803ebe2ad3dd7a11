"""A worker's writes are fenced by the attempt it claimed: once the sweeper requeued its silent
job and another worker claimed it again, the old worker (paused, not dead) loses every write.
Real PostgreSQL; two instances of one row stand for the two workers."""

import logging
import time
from datetime import timedelta

from django.utils import timezone

from lepton_web.jobs import job_heartbeat, job_kept_alive, job_progress_aside, jobs_sweep
from lepton_web.models import WorkerCheck


def handed_over() -> tuple[WorkerCheck, WorkerCheck]:
    """The first worker claims, goes silent, the sweeper requeues, a second worker claims."""
    old = WorkerCheck.objects.create()
    assert old.claim()
    assert jobs_sweep(now=old.heartbeat_at + timedelta(seconds=21)) in (
        {"requeued": 1},
        {"queued": 1},
    )
    new = WorkerCheck.objects.get(pk=old.pk)
    assert new.claim()
    assert (old.claimed_attempt, new.claimed_attempt) == (1, 2)
    return old, new


def row(job: WorkerCheck) -> dict:
    return (
        WorkerCheck.objects.filter(pk=job.pk)
        .values("status", "attempts", "progress", "message", "error_message", "heartbeat_at")
        .get()
    )


def test_a_stale_attempt_loses_report_succeed_and_fail_and_the_new_one_wins(db, caplog):
    old, new = handed_over()
    assert new.report(progress=30, message="New worker at 30%.")
    before = row(new)

    with caplog.at_level(logging.WARNING, logger="lepton_web.jobs"):
        assert old.report(progress=90, message="Old worker at 90%.") is False
        assert old.succeed(message="Old worker finished.") is False
        assert old.fail(error="Old worker crashed.") is False

    assert row(new) == before  # nothing of the old attempt reached the row
    assert before["status"] == "running"
    assert before["attempts"] == 2
    assert before["message"] == "New worker at 30%."
    logged = caplog.text
    assert "attempt 1 was given up on" in logged
    assert "its success was not recorded" in logged
    assert "its failure was not recorded: Old worker crashed." in logged

    assert new.succeed(message="New worker finished.")
    assert (row(new)["status"], row(new)["message"]) == ("succeeded", "New worker finished.")
    # The stale attempt's instance was refreshed: it sees the row as it is.
    assert old.status == "running"
    assert old.attempts == 2


def test_a_stale_attempt_cannot_fail_its_requeued_row_before_the_new_claim(db):
    old = WorkerCheck.objects.create()
    assert old.claim()
    jobs_sweep(now=old.heartbeat_at + timedelta(seconds=21))

    assert old.report(progress=50) is False
    assert old.fail(error="Old worker crashed.") is False
    assert old.succeed() is False

    assert row(old)["status"] == "queued"  # still waiting for its next worker
    assert WorkerCheck.objects.get(pk=old.pk).claim()


def test_the_sweeper_and_a_user_are_not_fenced(db):
    _old, new = handed_over()
    # A user's fail or cancel loads the row afresh: no claimed attempt, no fence.
    assert WorkerCheck.objects.get(pk=new.pk).cancel()
    assert row(new)["status"] == "cancelled"
    # The worker of the live attempt then stops at its report, as after any cancel.
    assert new.report(progress=40) is False

    other = WorkerCheck.objects.create()
    assert other.claim()
    assert WorkerCheck.objects.get(pk=other.pk).fail(error="Stopped by an administrator.")
    assert row(other)["status"] == "failed"


def test_the_same_attempt_still_writes_after_a_refresh(db):
    job = WorkerCheck.objects.create()
    assert job.claim()
    job.refresh_from_db()
    assert job.claimed_attempt == 1
    assert job.report(progress=10)
    assert job.fail(error="A real failure.")
    assert row(job)["status"] == "failed"


def wait_for(predicate, *, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_stale_attempts_heartbeat_never_keeps_the_new_attempt_alive(transactional_db):
    old, new = handed_over()
    silent_since = timezone.now() - timedelta(hours=1)
    WorkerCheck.objects.filter(pk=new.pk).update(heartbeat_at=silent_since)

    with job_heartbeat(old, interval_seconds=0.05) as should_stop:
        # Its first beat finds no row of its attempt: the old worker is told to stop.
        wait_for(should_stop)
    assert row(new)["heartbeat_at"] == silent_since
    # So the sweeper still sees the new attempt as silent (here: nobody beats for it).
    assert jobs_sweep() == {"requeued": 1}

    # The live attempt's own heartbeat does beat.
    fresh = WorkerCheck.objects.get(pk=new.pk)
    assert fresh.claim()
    assert fresh.claimed_attempt == 3
    WorkerCheck.objects.filter(pk=fresh.pk).update(heartbeat_at=silent_since)
    with job_heartbeat(fresh, interval_seconds=0.05) as should_stop:
        wait_for(lambda: row(fresh)["heartbeat_at"] > silent_since)
        assert not should_stop()


def test_job_kept_alive_beats_only_for_the_attempt_claimed_in_its_thread(
    transactional_db, settings
):
    settings.JOB_HEARTBEAT_INTERVAL_SECONDS = 0.05
    job = WorkerCheck.objects.create()
    silent_since = timezone.now() - timedelta(hours=1)

    with job_kept_alive(WorkerCheck, job.pk):
        mine = WorkerCheck.objects.get(pk=job.pk)  # the service's own instance, as in a task
        assert mine.claim()
        WorkerCheck.objects.filter(pk=job.pk).update(heartbeat_at=silent_since)
        wait_for(lambda: row(job)["heartbeat_at"] > silent_since)

        # This worker is paused long enough for the sweeper to hand the job on.
        jobs_sweep(now=timezone.now() + timedelta(hours=2))
        assert WorkerCheck.objects.get(pk=job.pk).claim()  # attempt 2, another worker
        WorkerCheck.objects.filter(pk=job.pk).update(heartbeat_at=silent_since)
        time.sleep(0.5)  # ten beat intervals of the stale attempt's thread
        assert row(job)["heartbeat_at"] == silent_since
        assert row(job)["attempts"] == 2


def test_progress_written_aside_is_fenced_too(transactional_db):
    old, new = handed_over()
    assert new.report(progress=20, message="New worker at 20%.")

    with job_progress_aside(old) as aside:
        aside(80, "Old worker at 80%.")

    assert (row(new)["progress"], row(new)["message"]) == (20, "New worker at 20%.")
