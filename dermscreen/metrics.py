"""Prometheus metrics (``prometheus-client``), for machines; Flower stays for people.

Two exporters:

* the web app's ``GET /metrics``: its own requests, latency and batches submitted, plus what is
  read at scrape time from the broker (``dermscreen_queue_messages``: waiting and reserved
  messages per queue) and from the database (``dermscreen_images``: images per status). One
  scrape of any web replica sees the whole system's queues and images.
* each ``dermscreen worker`` on ``DERMSCREEN_METRICS_PORT`` (0: off): images scored, failed,
  unassessable and flagged by that worker, per-chunk latency, the model version it serves.

Processes that fork (gunicorn workers, Celery's prefork pool) share their counters through
prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` names an empty directory per
node (``dermscreen worker`` sets one up under ``$DERMSCREEN_HOME`` when metrics are on).
"""

from __future__ import annotations

import json
import os
from typing import Iterable

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from dermscreen.config import Config
from dermscreen.worker import queues

CONTENT_TYPE = CONTENT_TYPE_LATEST
# kombu's Redis transport keeps a queue with priorities as one list per priority step.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"

# Web
HTTP_REQUESTS = Counter("dermscreen_http_requests", "HTTP requests answered",
                        ["method", "endpoint", "status"])
HTTP_LATENCY = Histogram("dermscreen_http_request_duration_seconds", "Time to answer a request",
                         ["method", "endpoint"])
BATCHES_SUBMITTED = Counter("dermscreen_batches_submitted", "Batches stored and recorded")

# Workers
IMAGES = Counter("dermscreen_images_scored", "Images a worker moved out of queued, by outcome",
                 ["outcome"])  # done, failed, unassessable
FLAGGED = Counter("dermscreen_images_flagged", "Images scored in the alert tier")
CHUNK_SECONDS = Histogram("dermscreen_chunk_duration_seconds",
                          "Time to score one chunk (read, gate, forward pass, database writes)",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
MODEL_INFO = Gauge("dermscreen_model_info", "The model version a worker process has loaded",
                   ["version"], multiprocess_mode="max")


def record_chunk(outcome, seconds: float) -> None:
    """Count what one run of a chunk did (``inference.ChunkOutcome``)."""
    IMAGES.labels("done").inc(outcome.done)
    IMAGES.labels("failed").inc(outcome.failed)
    IMAGES.labels("unassessable").inc(outcome.unassessable)
    FLAGGED.inc(len(outcome.flagged_image_ids))
    CHUNK_SECONDS.observe(seconds)


def queue_depth(client, queue: str) -> tuple[int, int]:
    """(waiting, reserved) messages of ``queue`` in a kombu Redis broker.

    Waiting: the lengths of the queue's lists (one per priority step). Reserved: messages a
    worker has taken but not acknowledged (prefetched or running, ``acks_late``), which kombu
    keeps in the ``unacked`` hash as ``[message, exchange, routing key]``.
    """
    names = [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]
    waiting = sum(client.llen(name) for name in names)
    reserved = 0
    for raw in client.hvals("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        reserved += routing_key == queue
    return waiting, reserved


def _queue_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("dermscreen_queue_messages",
                             "Messages in a broker queue: waiting, or reserved by a worker",
                             labels=["queue", "state"])


def _image_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("dermscreen_images", "Images in the database, by status",
                             labels=["status"])


class StateCollector:
    """Read at scrape time: queue depths from the broker, image counts from the database."""

    def __init__(self, config: Config):
        self.config = config

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """The families ``collect`` yields, without reading anything (the registry's name check)."""
        return [_queue_family(), _image_family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield from self._queues()
        yield self._images()

    def _queues(self) -> Iterable[GaugeMetricFamily]:
        if not self.config.broker_url.startswith(("redis://", "rediss://")):
            return
        import redis

        family = _queue_family()
        client = redis.Redis.from_url(self.config.broker_url, socket_timeout=5)
        try:
            for queue in queues.ALL:
                waiting, reserved = queue_depth(client, queue)
                family.add_metric([queue, "waiting"], waiting)
                family.add_metric([queue, "reserved"], reserved)
        finally:
            client.close()
        yield family

    def _images(self) -> GaugeMetricFamily:
        from sqlalchemy import func, select

        from dermscreen.db.screening import Image, ImageStatus
        from dermscreen.db.session import session_factory

        family = _image_family()
        with session_factory(self.config.database_url)() as session:
            counts = dict(session.execute(
                select(Image.status, func.count()).group_by(Image.status)).tuples().all())
        for status in ImageStatus:  # every status, those with no image too
            family.add_metric([status.value], counts.get(status, 0))
        return family


def process_registry() -> CollectorRegistry:
    """This process's metrics, or every process's of the node in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition(config: Config) -> bytes:
    """The web app's ``/metrics`` text: its process metrics and the system's state."""
    state = CollectorRegistry()
    state.register(StateCollector(config))
    return generate_latest(process_registry()) + generate_latest(state)
