from celery import shared_task

from lepton_web.celery import queue_name

# Training and evaluation run on the gpu queue without acks_late: Redis would redeliver a
# message that is still running after visibility_timeout and start a second copy. A lost worker
# is noticed by the heartbeat sweeper instead, which requeues the run to resume from its last
# checkpoint (lepton_web/jobs.py).


@shared_task(queue=queue_name("gpu"), soft_time_limit=11 * 3600, time_limit=12 * 3600)
def training_run_execute_task(run_id: int) -> None:
    from training_app.retrain import retrain_loops_after_run
    from training_app.search import search_trial_finished
    from training_app.services import training_run_execute

    try:
        training_run_execute(run_id=run_id)
    finally:
        search_trial_finished(run_id=run_id)  # a search's trial: ask for the next ones
        retrain_loops_after_run(run_id=run_id)  # a retrain loop's run: pre-label next


@shared_task(queue=queue_name("gpu"), acks_late=True, soft_time_limit=600, time_limit=660)
def searches_advance_task() -> int:
    from training_app.search import searches_advance

    return searches_advance()


@shared_task(queue=queue_name("gpu"), soft_time_limit=2 * 3600, time_limit=2 * 3600 + 300)
def evaluation_execute_task(evaluation_id: int) -> None:
    from training_app.services import evaluation_execute

    evaluation_execute(evaluation_id=evaluation_id)


@shared_task(queue=queue_name("gpu"), acks_late=True, soft_time_limit=600, time_limit=660)
def training_checkpoints_expire_task() -> dict:
    from training_app.services import training_checkpoints_expire

    return training_checkpoints_expire()


# Retrain on new labels (training_app/retrain.py). On the default queue, always named when
# publishing (task_routes sends training_app.tasks.* to gpu): the loop's pre-labels run here.
# No acks_late: the pre-labels can outlast the visibility timeout; the sweeps recover instead.
@shared_task(queue=queue_name("default"), soft_time_limit=6 * 3600, time_limit=6 * 3600 + 120)
def retrain_loop_advance_task(loop_id: int) -> None:
    from training_app.retrain import retrain_loop_advance

    retrain_loop_advance(loop_id=loop_id)


@shared_task(queue=queue_name("default"), acks_late=True, soft_time_limit=120, time_limit=150)
def retrain_loops_sweep_task() -> int:
    from training_app.retrain import retrain_loops_sweep

    return retrain_loops_sweep()
