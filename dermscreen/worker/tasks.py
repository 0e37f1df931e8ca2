"""The Celery tasks: ids in, a plain function's job (dermscreen.worker.jobs) run, follow-up work
enqueued after its commit, retries. Names and signatures are the message format: keep them.

Started by ``dermscreen worker`` (``celery -A dermscreen.worker.celery_app worker``).
"""

from __future__ import annotations

from celery import shared_task
from sqlalchemy.exc import OperationalError

from dermscreen.worker import broker, dispatch, jobs, queues
from dermscreen.worker.celery_app import task_config
from dermscreen.worker.notifier import DeliveryFailed

# Database hiccups (a restarted server, a locked SQLite file) are retried with back-off.
DATABASE_RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True,
                  "retry_backoff_max": 300, "max_retries": 10}


@shared_task(bind=True, name=queues.INGEST_TASK, **DATABASE_RETRY)
def ingest(self, batch_id: str) -> None:
    config = task_config(self.app)
    jobs.run_ingest(config, batch_id, on_chunk=lambda image_ids: dispatch.enqueue_chunks(
        config, [image_ids]))


@shared_task(bind=True, name=queues.PREDICT_TASK, **DATABASE_RETRY)
def predict_chunk(self, image_ids: list[str]) -> None:
    config = task_config(self.app)
    outcome = jobs.run_predict_chunk(config, image_ids)
    dispatch.enqueue_deliveries(config, outcome.delivery_ids)
    dispatch.enqueue_heatmaps(config, outcome.flagged_image_ids)


@shared_task(bind=True, name=queues.DELIVER_TASK, **DATABASE_RETRY)
def deliver(self, delivery_id: int) -> None:
    config = task_config(self.app)
    try:
        jobs.run_deliver(config, delivery_id)
    except DeliveryFailed as failure:
        # The database counts attempts and gives up; Celery only schedules the next one.
        raise self.retry(countdown=failure.retry_in, max_retries=None) from failure


@shared_task(bind=True, name=queues.RECONCILE_TASK, **DATABASE_RETRY)
def reconcile(self) -> None:
    config = task_config(self.app)
    work = jobs.run_reconcile(config)
    for batch_id in work.batch_ids:
        dispatch.enqueue_ingest(config, batch_id)
    dispatch.enqueue_chunks(config, work.chunks, again=True)
    dispatch.enqueue_deliveries(config, work.delivery_ids)
    if work.broker_run_id:  # handled this broker restart: not again
        broker.remember(config, work.broker_run_id)
