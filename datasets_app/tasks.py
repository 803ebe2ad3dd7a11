from celery import shared_task

from lepton_web.celery import queue_name


# Imports restart from the first row, reports are read-only, and splits and cleaning fixes
# commit their writes together with the job's success, so a second delivery is harmless (the job
# row is claimed once); late acks bring the message back after a crash.
@shared_task(
    queue=queue_name("default"), acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300
)
def dataset_job_execute_task(job_id: int) -> None:
    from datasets_app.models import DatasetJob
    from datasets_app.services import dataset_job_execute
    from lepton_web.jobs import job_kept_alive

    # Every kind of dataset job beats from a thread from its claim on, so a long step (a
    # quality report of a million records) is never mistaken for a lost worker.
    with job_kept_alive(DatasetJob, job_id):
        dataset_job_execute(job_id=job_id)


# Counting is read-only and saves the tables with the stamp it read, so a second delivery only
# counts again.
@shared_task(queue=queue_name("default"), acks_late=True, soft_time_limit=1800, time_limit=1900)
def agreement_recount_task(dataset_id: int) -> None:
    from datasets_app.services.agreement import dataset_agreement_recount

    dataset_agreement_recount(dataset_id=dataset_id)
