"""One unit of work per task: a transaction around a plain function, committed before anything
is enqueued. The Celery tasks and the embedded ``dermscreen screen`` both run these.

    chunks = run_ingest(config, batch_id, on_chunk)  # on_chunk enqueues each as it commits
    outcome = run_predict_chunk(config, image_ids)   # then enqueue deliveries and heatmaps
"""

from __future__ import annotations

import time
from typing import Callable

from dermscreen import metrics
from dermscreen.config import Config
from dermscreen.db.screening import Batch
from dermscreen.db.session import session_factory
from dermscreen.registry import active_version, bundle_path
from dermscreen.storage import store_for
from dermscreen.worker import broker, leases, notifier
from dermscreen.worker.inference import (ChunkOutcome, queued_paths, record_chunk, score_images,
                                         worker_bundle)
from dermscreen.worker.ingest import ingest, remove_uploads
from dermscreen.worker.reconcile import Work, reconcile


def run_ingest(config: Config, batch_id: str,
               on_chunk: Callable[[list[str]], None] = lambda image_ids: None,
               on_upload: Callable[[int], None] = lambda count: None) -> list[list[str]]:
    """Ingest a batch, ``on_chunk`` after each chunk's commit; return the chunks handed out.
    The original uploads are deleted once the whole batch is committed."""
    chunks: list[list[str]] = []

    def handed_out(image_ids: list[str]) -> None:
        chunks.append(image_ids)
        on_chunk(image_ids)

    sessions = session_factory(config.database_url)
    ingest(sessions, config, batch_id, handed_out, on_upload)
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is not None and batch.ingested_at is not None:
            remove_uploads(config, batch.upload_dir)
    return chunks


def run_predict_chunk(config: Config, image_ids: list[str],
                      bundle_dir: str | None = None) -> ChunkOutcome:
    """Score a chunk with the bundle at ``bundle_dir``, by default the active model version's.

    The chunk's free queued images are held (a lease, committed first, renewed while they are
    decoded and scored), then the results are written in one transaction. Images another worker
    holds are left to it.
    """
    sessions = session_factory(config.database_url)
    with sessions.begin() as session:
        if bundle_dir is None:
            bundle_dir = str(bundle_path(active_version(session, config), config))
        held = leases.take(session, config, image_ids)
    bundle = worker_bundle(bundle_dir, config.inference_threads)
    metrics.MODEL_INFO.labels(bundle.version).set(1)
    started = time.perf_counter()
    with leases.renewed(sessions, config, held) as heartbeat:
        with sessions() as session:
            stored = queued_paths(session, held)
        scored = score_images(bundle, store_for(config), stored)
        heartbeat.stop()
        with sessions.begin() as session:
            outcome = record_chunk(session, config, bundle, image_ids, scored)
    metrics.record_chunk(outcome, time.perf_counter() - started)
    return outcome


def run_deliver(config: Config, delivery_id: int):
    return notifier.deliver(session_factory(config.database_url), config, delivery_id)


def run_reconcile(config: Config) -> Work:
    """The reconciler's work; after a broker restart (a new run id), everything queued and free.
    The caller enqueues it, then remembers ``work.broker_run_id`` (``broker.remember``)."""
    seen = broker.run_id(config)
    restarted = seen is not None and seen != broker.last_run_id(config)
    with session_factory(config.database_url).begin() as session:
        work = reconcile(session, config, broker_restarted=restarted)
    work.broker_run_id = seen if restarted else None
    return work
