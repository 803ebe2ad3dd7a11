from celery import shared_task

from lepton_web.celery import queue_name


@shared_task(queue=queue_name("default"), acks_late=True, soft_time_limit=120, time_limit=150)
def jobs_sweep_task() -> dict:
    from lepton_web.jobs import jobs_sweep

    return jobs_sweep()


# Short and idempotent (the job row is claimed once), so late acks are safe here.
@shared_task(bind=True, acks_late=True, soft_time_limit=300, time_limit=330)
def worker_check_execute_task(self, job_id: int) -> None:
    from lepton_web.services import worker_check_execute

    worker_check_execute(job_id=job_id, worker_hostname=self.request.hostname or "worker")
