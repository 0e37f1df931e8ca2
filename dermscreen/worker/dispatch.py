"""Sending work to the queues, by task name (callers never import the tasks).

Call these only after the transaction that wrote the rows has committed::

    session.commit()
    enqueue_ingest(config, batch.id)
"""

from __future__ import annotations

from dermscreen.config import Config
from dermscreen.worker import queues
from dermscreen.worker.celery_app import app_for


def enqueue_ingest(config: Config, batch_id: str) -> None:
    app_for(config).send_task(queues.INGEST_TASK, args=[batch_id])


def enqueue_chunks(config: Config, chunks: list[list[str]], again: bool = False) -> None:
    """Queue chunks for inference; ``again``: handed out again, they go before the new ones."""
    priority = queues.AGAIN_PRIORITY if again else queues.NEW_PRIORITY
    for image_ids in chunks:
        app_for(config).send_task(queues.PREDICT_TASK, args=[image_ids], priority=priority)


def enqueue_deliveries(config: Config, delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        app_for(config).send_task(queues.DELIVER_TASK, args=[delivery_id])


def enqueue_heatmaps(config: Config, image_ids: list[str]) -> None:
    for image_id in image_ids:
        app_for(config).send_task(queues.HEATMAP_TASK, args=[image_id],
                                  priority=queues.HEATMAP_PRIORITY)
