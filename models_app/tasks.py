from celery import shared_task

from lepton_web.celery import queue_name


@shared_task(queue=queue_name("default"), soft_time_limit=3600, time_limit=3600 + 120)
def model_export_execute_task(export_id: int) -> None:
    from models_app.exports import model_export_execute

    model_export_execute(export_id=export_id)


# No acks_late: a batch can outlast the broker's visibility timeout; the job sweeper requeues a
# batch whose worker went silent, and the job claims its row, so a second copy does nothing.
@shared_task(queue=queue_name("default"), soft_time_limit=6 * 3600, time_limit=6 * 3600 + 120)
def batch_prediction_execute_task(batch_id: int) -> None:
    from models_app.batch_prediction import batch_prediction_execute

    batch_prediction_execute(batch_id=batch_id)


# No acks_late: a scan of a large dataset can outlast the broker's visibility timeout; the job
# sweeper requeues a scan whose worker went silent, and the scan claims its row once.
@shared_task(queue=queue_name("default"), soft_time_limit=6 * 3600, time_limit=6 * 3600 + 120)
def mislabeled_scan_execute_task(scan_id: int) -> None:
    from models_app.mislabeled import mislabeled_scan_execute

    mislabeled_scan_execute(scan_id=scan_id)
