from celery import shared_task


@shared_task(queue="default", soft_time_limit=3600, time_limit=3600 + 120)
def model_export_execute_task(export_id: int) -> None:
    from models_app.exports import model_export_execute

    model_export_execute(export_id=export_id)
