"""The reconciler (run by celery beat): find work whose message was lost and hand it out again.

    with sessions.begin() as session:
        work = reconcile(session, config)
    # after the commit: enqueue work.batch_ids (ingest), work.chunks, work.delivery_ids

A dead worker's chunk, or the rest of a batch whose ingester died, is handed out again once its
lease (``chunk_lease_seconds``, renewed while the worker lives) has passed: within a lease and a
reconcile interval, and ahead of the new chunks. A lost message (images queued and never taken)
waits for the longer ``queue_lease_seconds``, except after the broker restarted
(dermscreen.worker.broker), when messages were lost for sure: then everything queued and held by
no worker, and every batch not yet ingested, is handed out again at once. Nothing is ever lost;
handing out work twice is harmless because every task is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from dermscreen.config import Config
from dermscreen.db.alerts import Delivery, DeliveryStatus
from dermscreen.db.base import utcnow
from dermscreen.db.screening import Batch, BatchStatus, Image, ImageStatus
from dermscreen.worker.ingest import chunked


@dataclass
class Work:
    batch_ids: list[str] = field(default_factory=list)
    chunks: list[list[str]] = field(default_factory=list)
    delivery_ids: list[int] = field(default_factory=list)
    # The broker's run id, to remember once this work is enqueued (None: nothing to remember).
    broker_run_id: str | None = None


def reconcile(session: Session, config: Config, broker_restarted: bool = False) -> Work:
    """Batches never ingested, or whose ingester's lease has passed; queued images whose
    worker's lease has passed, or that no worker took within the queue lease (both are queued
    afresh now); and deliveries that are due but were created or retried more than an interval
    ago. After a broker restart, the queue lease is treated as passed for everything."""
    now = utcnow()
    expired = now if broker_restarted else now - timedelta(seconds=config.queue_lease_seconds)
    work = Work()
    never_taken = and_(Batch.status == BatchStatus.RECEIVED, Batch.created_at < expired)
    stopped = and_(Batch.status == BatchStatus.PROCESSING, Batch.ingested_at.is_(None),
                   Batch.held_until < now)
    work.batch_ids = list(session.scalars(
        select(Batch.id).where(or_(never_taken, stopped)).order_by(Batch.created_at)))
    # One statement picks and re-queues, so an image a worker takes meanwhile is left to it.
    stale = sorted(session.execute(
        update(Image)
        .where(Image.status == ImageStatus.QUEUED,
               or_(Image.held_until < now,
                   and_(Image.held_until.is_(None), Image.queued_at < expired)))
        .values(queued_at=now, held_until=None)
        .returning(Image.id, Image.batch_id, Image.created_at)
        .execution_options(synchronize_session=False)).all(),
        key=lambda row: (row.batch_id, row.created_at, row.id))
    by_batch: dict[str, list[str]] = {}
    for row in stale:
        by_batch.setdefault(row.batch_id, []).append(row.id)
    work.chunks = [chunk for ids in by_batch.values() for chunk in chunked(ids, config.chunk_size)]
    settled = now - timedelta(seconds=config.reconcile_interval_seconds)
    work.delivery_ids = list(session.scalars(
        select(Delivery.id).where(
            Delivery.status == DeliveryStatus.PENDING,
            or_(and_(Delivery.next_attempt_at.is_(None), Delivery.created_at < settled),
                Delivery.next_attempt_at <= settled))
        .order_by(Delivery.id)))
    return work
