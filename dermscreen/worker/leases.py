"""Leases on queued images: a worker holds the images of the chunk it scores, and keeps holding
them from a heartbeat thread while the chunk runs, so that the reconciler can tell a dead worker's
chunk (its lease has passed) from a slow one and hand it out again within seconds.

    with sessions.begin() as session:
        held = take(session, config, image_ids)       # committed before the long work
    with renewed(sessions, config, held) as heartbeat:  # released if the chunk fails
        ...decode and score...
        heartbeat.stop()                              # then write the results

An image another worker holds is not taken (a duplicate message waits on that worker's lease);
moving an image out of ``queued`` clears its lease.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from dermscreen.config import Config
from dermscreen.db.base import utcnow
from dermscreen.db.screening import Image, ImageStatus

log = logging.getLogger(__name__)


def _hold(session: Session, config: Config, image_ids: list[str], *conditions) -> list[str]:
    until = utcnow() + timedelta(seconds=config.chunk_lease_seconds)
    return list(session.scalars(
        update(Image).where(Image.id.in_(image_ids), Image.status == ImageStatus.QUEUED,
                            *conditions)
        .values(held_until=until).returning(Image.id)
        .execution_options(synchronize_session=False)))


def take(session: Session, config: Config, image_ids: list[str]) -> list[str]:
    """Hold the queued images of ``image_ids`` that no live lease holds; their ids."""
    if not image_ids:
        return []
    free = or_(Image.held_until.is_(None), Image.held_until < utcnow())
    return _hold(session, config, image_ids, free)


def release(session: Session, image_ids: list[str]) -> None:
    """Give back held images that are still queued (a chunk that failed and will be retried)."""
    session.execute(update(Image).where(Image.id.in_(image_ids),
                                        Image.status == ImageStatus.QUEUED)
                    .values(held_until=None).execution_options(synchronize_session=False))


class Heartbeat:
    """Renews a lease every third of it from a daemon thread until ``stop``."""

    def __init__(self, sessions: sessionmaker, config: Config, image_ids: list[str]):
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(sessions, config, image_ids),
                                        name="dermscreen-lease", daemon=True)
        if image_ids:
            self._thread.start()

    def _beat(self, sessions: sessionmaker, config: Config, image_ids: list[str]) -> None:
        while not self._stopping.wait(config.chunk_lease_seconds / 3):
            try:
                with sessions.begin() as session:
                    _hold(session, config, image_ids)
            except Exception:  # a database hiccup: the next beat tries again
                log.warning("could not renew the lease of %d images", len(image_ids),
                            exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()


@contextmanager
def renewed(sessions: sessionmaker, config: Config, image_ids: list[str]) -> Iterator[Heartbeat]:
    """Renew the lease on ``image_ids`` until the block ends or calls ``stop()`` on what it is
    given (before it writes those rows itself: the renewals commit beside it); release the lease
    when the block raises, so that a retry can take the images at once."""
    heartbeat = Heartbeat(sessions, config, image_ids)
    try:
        yield heartbeat
    except BaseException:
        heartbeat.stop()
        try:
            with sessions.begin() as session:
                release(session, image_ids)
        except Exception:  # the lease runs out instead
            log.warning("could not release %d images", len(image_ids), exc_info=True)
        raise
    heartbeat.stop()
