"""The reconciler hands out again what a lost message or a dead worker left behind."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from dermscreen.db import Batch, Delivery, Image
from dermscreen.db.base import utcnow
from dermscreen.worker import jobs, leases
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


def test_a_dead_workers_lease_passes_and_its_images_are_handed_out_again(
        sessions, worker_config, submit, make_hospital):
    hospital = make_hospital()
    batch_id = submit(hospital, {"red.jpg": red(), "blue.png": blue()})
    [chunk] = jobs.run_ingest(worker_config, batch_id)
    with sessions.begin() as session:  # a worker takes the chunk...
        assert sorted(leases.take(session, worker_config, chunk)) == sorted(chunk)
    with sessions.begin() as session:  # ...so a duplicate message takes nothing
        assert leases.take(session, worker_config, chunk) == []
    assert jobs.run_predict_chunk(worker_config, chunk).done == 0
    assert jobs.run_reconcile(worker_config).chunks == []  # its lease is live

    passed = utcnow() - timedelta(seconds=1)  # ...and dies: nobody renews its lease
    with sessions.begin() as session:
        session.execute(update(Image).where(Image.batch_id == batch_id).values(held_until=passed))
    work = jobs.run_reconcile(worker_config)

    assert [sorted(ids) for ids in work.chunks] == [sorted(chunk)]
    with sessions() as session:
        assert {image.held_until for image in session.scalars(
            select(Image).where(Image.batch_id == batch_id))} == {None}
    assert jobs.run_reconcile(worker_config).chunks == []  # queued afresh, not handed out twice
    assert jobs.run_predict_chunk(worker_config, work.chunks[0]).done == 2
    with sessions() as session:
        assert session.get(Batch, batch_id).done_images == 2


def test_a_live_chunk_renews_its_lease_and_a_failed_one_gives_it_back(
        sessions, worker_config, submit, make_hospital):
    worker_config.chunk_lease_seconds = 1
    hospital = make_hospital()
    [chunk] = jobs.run_ingest(worker_config, submit(hospital, {"red.jpg": red(), "b.png": blue()}))
    with sessions.begin() as session:
        held = leases.take(session, worker_config, chunk)

    with leases.renewed(sessions, worker_config, held):
        time.sleep(2.5)  # past the first lease: only the heartbeat keeps the images held
        assert jobs.run_reconcile(worker_config).chunks == []
        with sessions.begin() as session:
            assert leases.take(session, worker_config, chunk) == []

    with pytest.raises(RuntimeError):
        with leases.renewed(sessions, worker_config, held):
            raise RuntimeError("the chunk failed")
    with sessions.begin() as session:  # given back: a retry takes them at once
        assert sorted(leases.take(session, worker_config, chunk)) == sorted(chunk)


def test_after_a_broker_restart_everything_queued_and_free_is_handed_out_at_once(
        sessions, worker_config, submit, make_hospital):
    """Redis restarted (a new run id): the messages it lost are not waited for (queue lease);
    the images a live worker holds stay with it; the restart is handled once."""
    import redis

    from dermscreen.worker import broker
    from tests.conftest import REDIS_SERVER

    worker_config.broker_url = f"{REDIS_SERVER}/11"
    client = redis.Redis.from_url(worker_config.broker_url, socket_connect_timeout=5)
    client.flushdb()  # a Redis that lost its data, or one the reconciler never saw
    hospital = make_hospital()
    never_ingested = submit(hospital, {"red.jpg": red()})
    queued = submit(hospital, {"red.jpg": red(2), "blue.png": blue()})
    [chunk] = jobs.run_ingest(worker_config, queued)
    taken = submit(hospital, {"red.jpg": red(3)})
    [held] = jobs.run_ingest(worker_config, taken)
    with sessions.begin() as session:
        assert leases.take(session, worker_config, held) == held

    work = jobs.run_reconcile(worker_config)

    assert work.broker_run_id == client.info("server")["run_id"]
    assert work.batch_ids == [never_ingested]
    assert [sorted(ids) for ids in work.chunks] == [sorted(chunk)]
    broker.remember(worker_config, work.broker_run_id)
    again = jobs.run_reconcile(worker_config)  # the same Redis: the queue lease holds again
    assert (again.batch_ids, again.chunks, again.broker_run_id) == ([], [], None)

    client.set(broker.KEY, "the run id of the Redis before a restart")
    restarted = jobs.run_reconcile(worker_config)
    assert restarted.batch_ids == [never_ingested]
    assert [sorted(ids) for ids in restarted.chunks] == [sorted(chunk)]
    client.flushdb()


def test_the_filesystem_broker_is_never_taken_for_restarted(worker_config):
    assert worker_config.embedded
    assert jobs.run_reconcile(worker_config).broker_run_id is None
