"""Prometheus metrics: the queue depth read from a real Redis broker (waiting and reserved
messages, as kombu keeps them), and the web app's /metrics text."""

from __future__ import annotations

import io

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dermscreen.metrics import queue_depth
from tests.conftest import REDIS_SERVER
from tests.factories import RED, image_bytes, lesion_image


def samples(text: str) -> dict[tuple, float]:
    """``{(name, (label, value), ...): value}`` of a Prometheus text exposition."""
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.services
def test_queue_depth_counts_waiting_and_reserved_messages():
    import redis
    from kombu import Connection

    url = f"{REDIS_SERVER.rstrip('/')}/11"
    client = redis.Redis.from_url(url)
    client.flushdb()
    with Connection(url) as connection:
        inference = connection.SimpleQueue("inference")
        for index in range(3):
            inference.put({"chunk": index})
        connection.SimpleQueue("notify").put({"delivery": 1})
        taken = inference.get(timeout=5)  # reserved: taken, not acknowledged
        assert queue_depth(client, "inference") == (2, 1)
        assert queue_depth(client, "notify") == (1, 0)
        assert queue_depth(client, "ingest") == (0, 0)
        taken.ack()
        assert queue_depth(client, "inference") == (2, 0)
        inference.close()
    client.flushdb()


def test_web_metrics_report_requests_submissions_and_images_by_status(
        app, client, make_hospital, make_scored_batch, make_token):
    hospital = make_hospital()
    make_scored_batch(hospital=hospital, scores={"a.jpg": 0.9, "b.jpg": 0.1, "c.jpg": None})
    _, token = make_token(hospital)
    before = samples(client.get("/metrics").text)
    response = client.post("/api/v1/batches", headers={"Authorization": f"Bearer {token}"},
                           data={"files": [(io.BytesIO(image_bytes(lesion_image(RED))), "x.jpg")]})
    assert response.status_code == 202

    answer = client.get("/metrics")

    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    after = samples(answer.text)
    submitted = ("dermscreen_batches_submitted_total",)
    assert after[submitted] == before.get(submitted, 0) + 1
    posts = ("dermscreen_http_requests_total", ("endpoint", "/api/v1/batches"),
             ("method", "POST"), ("status", "202"))
    assert after[posts] == before.get(posts, 0) + 1
    assert after[("dermscreen_http_request_duration_seconds_count", ("endpoint", "/api/v1/batches"),
                  ("method", "POST"))] >= 1
    images = {labels[0][1]: value for (name, *labels), value in after.items()
              if name == "dermscreen_images"}
    assert images == {"received": 0, "queued": 0, "done": 2, "failed": 1, "unassessable": 0}
