"""The reconciler hands out again what a lost message or a dead worker left behind."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from dermscreen.db import Batch, Delivery, Image
from dermscreen.db.base import utcnow
from dermscreen.worker import jobs
from tests.worker.conftest import blue, red


def test_reconcile_finds_stale_work_only(sessions, worker_config, submit, make_hospital):
    hospital = make_hospital(webhook_url="https://hooks.example.org/x")
    never_ingested = submit(hospital, {"red.jpg": red()})
    stuck = submit(hospital, {"red.jpg": red(), "blue.png": blue(), "red3.jpg": red(3)})
    fresh = submit(hospital, {"blue.png": blue(1)})
    jobs.run_ingest(worker_config, stuck)
    jobs.run_ingest(worker_config, fresh)
    assert jobs.run_reconcile(worker_config).chunks == []  # nothing is stale yet

    old = utcnow() - timedelta(seconds=worker_config.queue_lease_seconds + 5)
    with sessions.begin() as session:
        session.execute(update(Image).where(Image.batch_id == stuck).values(queued_at=old))
        session.execute(update(Batch).where(Batch.id == never_ingested).values(created_at=old))

    work = jobs.run_reconcile(worker_config)

    with sessions() as session:
        stuck_ids = set(session.scalars(select(Image.id).where(Image.batch_id == stuck)))
    assert work.batch_ids == [never_ingested]
    assert sorted(len(chunk) for chunk in work.chunks) == [1, 2]  # chunk_size 2
    assert {i for chunk in work.chunks for i in chunk} == stuck_ids
    assert jobs.run_reconcile(worker_config).chunks == []  # their lease restarted

    for chunk in work.chunks:
        jobs.run_predict_chunk(worker_config, chunk)
    with sessions() as session:
        deliveries = session.scalars(select(Delivery)).all()
    assert len(deliveries) == 2  # two red images, one webhook each
    assert jobs.run_reconcile(worker_config).delivery_ids == []  # just created: in flight
    with sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id == deliveries[0].id)
                        .values(created_at=old))
        session.execute(update(Delivery).where(Delivery.id == deliveries[1].id)
                        .values(next_attempt_at=utcnow() + timedelta(hours=1)))
    assert jobs.run_reconcile(worker_config).delivery_ids == [deliveries[0].id]
