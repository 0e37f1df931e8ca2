"""The reconciler (run by celery beat): find work whose message was lost and hand it out again.

    with sessions.begin() as session:
        work = reconcile(session, config)
    # after the commit: enqueue work.batch_ids (ingest), work.chunks, work.delivery_ids

A lost message or a dead worker delays work by at most a lease, never loses it; handing out work
twice is harmless because every task is idempotent.
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


def reconcile(session: Session, config: Config) -> Work:
    """Batches never ingested, images queued past the lease (their lease restarts now), and
    deliveries that are due but were created or retried more than an interval ago."""
    now = utcnow()
    expired = now - timedelta(seconds=config.queue_lease_seconds)
    work = Work()
    work.batch_ids = list(session.scalars(
        select(Batch.id).where(Batch.status == BatchStatus.RECEIVED, Batch.created_at < expired)
        .order_by(Batch.created_at)))
    stale = session.execute(
        select(Image.id, Image.batch_id)
        .where(Image.status == ImageStatus.QUEUED, Image.queued_at < expired)
        .order_by(Image.batch_id, Image.created_at)).all()
    if stale:
        session.execute(update(Image).where(Image.id.in_([row.id for row in stale]))
                        .values(queued_at=now).execution_options(synchronize_session=False))
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
