"""Ingest a chunk at a time: each chunk is scored while the rest of the batch is unpacked, a batch
closes only after its ingest, and an ingester that died is taken over where it stopped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from dermscreen.db import Batch, BatchStatus, Image, ImageStatus
from dermscreen.db.base import utcnow
from dermscreen.worker import ingest, jobs
from tests.worker.conftest import red, zip_bytes


class Died(Exception):
    """The ingester's process dies after a commit (a SIGKILL, a lost node)."""


def batch_row(sessions, batch_id) -> Batch:
    with sessions() as session:
        return session.get(Batch, batch_id)


def names(sessions, batch_id) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(select(Image.original_name)
                                      .where(Image.batch_id == batch_id)))


def expire_ingest_lease(sessions, batch_id) -> None:
    with sessions.begin() as session:
        session.execute(update(Batch).where(Batch.id == batch_id)
                        .values(held_until=utcnow() - timedelta(seconds=1)))


def test_each_chunk_is_scored_while_the_rest_is_unpacked_and_the_batch_closes_after_ingest(
        sessions, worker_config, make_hospital, submit):
    batch_id = submit(make_hospital(), {"a.zip": zip_bytes({f"red{i}.jpg": red(i)
                                                            for i in range(5)})})
    seen = []

    def score_now(image_ids):
        batch = batch_row(sessions, batch_id)  # committed: another session sees it
        seen.append((len(image_ids), batch.total_images, batch.ingested_at))
        jobs.run_predict_chunk(worker_config, image_ids)
        assert batch_row(sessions, batch_id).status is BatchStatus.PROCESSING

    jobs.run_ingest(worker_config, batch_id, score_now)

    assert seen == [(2, 2, None), (2, 4, None), (1, 5, None)]  # chunk_size 2
    batch = batch_row(sessions, batch_id)
    assert (batch.status, batch.total_images, batch.done_images) == (BatchStatus.DONE, 5, 5)
    assert batch.ingested_at is not None and batch.completed_at is not None


def test_an_ingester_that_died_is_taken_over_where_it_stopped_once_its_lease_passes(
        sessions, worker_config, make_hospital, submit, monkeypatch):
    batch_id = submit(make_hospital(), {"a.zip": zip_bytes({f"red{i}.jpg": red(i)
                                                            for i in range(5)}),
                                        "bad.jpg": b"not an image"})
    handed_out = []

    def die(image_ids):
        handed_out.append(image_ids)
        raise Died

    with monkeypatch.context() as killed:  # SIGKILL: nothing runs after the death
        killed.setattr(ingest, "_release", lambda sessions, batch_id: None)
        with pytest.raises(Died):
            jobs.run_ingest(worker_config, batch_id, die)
    assert names(sessions, batch_id) == ["a.zip/red0.jpg", "a.zip/red1.jpg"]
    # While its lease runs, it is not taken over (it may be slow, not dead).
    assert jobs.run_ingest(worker_config, batch_id) == []
    assert batch_id not in jobs.run_reconcile(worker_config).batch_ids

    expire_ingest_lease(sessions, batch_id)
    assert jobs.run_reconcile(worker_config).batch_ids == [batch_id]
    chunks = jobs.run_ingest(worker_config, batch_id)

    assert chunks[0] == handed_out[0]  # its last chunk again: the message may be lost
    assert names(sessions, batch_id) == [*(f"a.zip/red{i}.jpg" for i in range(5)), "bad.jpg"]
    with sessions() as session:
        queued = set(session.scalars(select(Image.id).where(
            Image.batch_id == batch_id, Image.status == ImageStatus.QUEUED)))
    assert sorted(len(chunk) for chunk in chunks) == [1, 2, 2]
    assert {i for chunk in chunks for i in chunk} == queued and len(queued) == 5
    batch = batch_row(sessions, batch_id)
    assert (batch.status, batch.total_images, batch.failed_images) == (
        BatchStatus.PROCESSING, 6, 1)
    assert batch.ingested_at is not None and batch.held_until is None
    assert jobs.run_reconcile(worker_config).batch_ids == []
    for chunk in chunks:
        jobs.run_predict_chunk(worker_config, chunk)
    assert batch_row(sessions, batch_id).status is BatchStatus.DONE


def test_an_ingest_that_failed_ends_its_lease_so_that_it_goes_on_at_once(
        sessions, worker_config, make_hospital, submit):
    batch_id = submit(make_hospital(), {"a.zip": zip_bytes({f"red{i}.jpg": red(i)
                                                            for i in range(3)})})

    def fail(image_ids):
        raise Died  # the broker went away, say: the task fails and is retried

    with pytest.raises(Died):
        jobs.run_ingest(worker_config, batch_id, fail)
    assert jobs.run_reconcile(worker_config).batch_ids == [batch_id]  # its lease has ended

    chunks = jobs.run_ingest(worker_config, batch_id)  # the retry, with no lease to wait for

    assert [len(chunk) for chunk in chunks] == [2, 1]
    assert names(sessions, batch_id) == [f"a.zip/red{i}.jpg" for i in range(3)]
    assert batch_row(sessions, batch_id).ingested_at is not None


def test_of_two_ingesters_of_one_batch_one_goes_on_and_each_entry_is_committed_once(
        sessions, worker_config, make_hospital, submit):
    batch_id = submit(make_hospital(), {"a.zip": zip_bytes({f"red{i}.jpg": red(i)
                                                            for i in range(5)})})
    chunks_of_second = []

    def stall_then_meet_a_second_ingester(image_ids):
        if not chunks_of_second:  # its lease passes; the reconciler starts another
            expire_ingest_lease(sessions, batch_id)
            chunks_of_second.extend(jobs.run_ingest(worker_config, batch_id))

    first = jobs.run_ingest(worker_config, batch_id, stall_then_meet_a_second_ingester)

    assert len(first) == 1  # its next commit found the batch gone past its count: it stopped
    assert chunks_of_second[0] == first[0]
    assert names(sessions, batch_id) == [f"a.zip/red{i}.jpg" for i in range(5)]
    batch = batch_row(sessions, batch_id)
    assert (batch.total_images, batch.ingested_entries) == (5, 5)
    assert batch.ingested_at is not None


def test_a_batch_of_refused_files_only_closes_at_ingest(sessions, worker_config, make_hospital,
                                                        submit):
    batch_id = submit(make_hospital(), {f"bad{i}.jpg": b"not an image" for i in range(5)})
    assert jobs.run_ingest(worker_config, batch_id) == []
    batch = batch_row(sessions, batch_id)
    assert (batch.status, batch.total_images, batch.failed_images) == (BatchStatus.DONE, 5, 5)
