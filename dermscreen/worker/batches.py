"""A batch's counters and its close, in SQL, so that the ingester and any number of workers can
each add what they did without reading first.

    add_counts(session, batch_id, done=3, flagged=1)
    close_if_complete(session, batch_id)   # done once ingested and every image has an outcome
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from dermscreen.db.base import utcnow
from dermscreen.db.screening import Batch, BatchStatus


def add_counts(session: Session, batch_id: str, **counts: int) -> None:
    """Add to the batch's counters: ``total``, ``done``, ``failed``, ``unassessable``,
    ``flagged`` (images)."""
    columns = {f"{name}_images": getattr(Batch, f"{name}_images") + count
               for name, count in counts.items() if count}
    if columns:
        session.execute(update(Batch).where(Batch.id == batch_id).values(**columns)
                        .execution_options(synchronize_session=False))


def close_if_complete(session: Session, batch_id: str) -> None:
    """Mark the batch done when its ingest has finished and each of its images is done, failed
    or unassessable."""
    session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.status == BatchStatus.PROCESSING,
                            Batch.ingested_at.is_not(None),
                            Batch.done_images + Batch.failed_images
                            + Batch.unassessable_images >= Batch.total_images)
        .values(status=BatchStatus.DONE, completed_at=utcnow())
        .execution_options(synchronize_session=False))
