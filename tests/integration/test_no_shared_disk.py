"""Many nodes, no shared disk: the web app, two `dermscreen worker` processes and the notifier,
each with its own empty DERMSCREEN_HOME and its own copy of the model bundle, nothing in common but
PostgreSQL, Redis and the S3-compatible store (tests/s3server.py). A batch submitted over HTTP is
scored, every flagged image gets its heatmap in the store, and every alert is delivered; then the
metrics of the web app and of both workers agree with the database.

    pytest tests/integration/test_no_shared_disk.py -q
"""

from __future__ import annotations

import shutil

import pytest
import requests
from sqlalchemy import func, select

from dermscreen import accounts
from dermscreen.db import (Alert, Batch, BatchStatus, Delivery, DeliveryStatus, Image,
                           ImageStatus, Prediction, Role)
from dermscreen.storage import store_for
from tests.integration.conftest import HttpApp, redis_database, service_config, wait_for
from tests.s3server import free_port
from tests.test_metrics import samples
from tests.worker.conftest import blue, red, zip_bytes

pytestmark = [pytest.mark.services, pytest.mark.slow]
BATCH_TIMEOUT = 120
NODES = ("web", "worker1", "worker2", "notifier")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, smtp, tiny_bundle, workers, s3_server):
    """One directory per node (its home, empty, and its bundle copy); the S3 bucket for all."""
    bucket = s3_server.bucket("dermscreen")
    configs = {}
    for node in NODES:
        root = tmp_path_factory.mktemp(node)
        bundle = shutil.copytree(tiny_bundle, root / "bundle")
        configs[node] = service_config(root, postgres_url, redis_database(12), bundle, smtp.url,
                                       home=root / "home", store_dir="", **bucket,
                                       metrics_port=free_port() if node != "web" else 0)
        assert not configs[node].home.exists()
    workers.start("worker1", configs["worker1"], "ingest,inference")
    workers.start("worker2", configs["worker2"], "ingest,inference")
    workers.start("notifier", configs["notifier"], "notify")
    with HttpApp(configs["web"]) as http:
        yield configs, http


@pytest.fixture(scope="module")
def hospital(module_sessions, webhook):
    with module_sessions.begin() as session:
        hospital = accounts.create_hospital(session, "Hospital S3", webhook_url=webhook.url)
        accounts.create_user(session, "derm@s3.example.org", Role.DERMATOLOGIST, hospital=hospital)
        _, token = accounts.issue_token(session, hospital, name="S3")
    return token


def test_a_batch_needs_no_shared_directory(cluster, hospital, module_sessions, smtp, webhook):
    configs, http = cluster
    headers = {"Authorization": f"Bearer {hospital}"}
    archive = zip_bytes({f"red{i}.jpg": red(i) for i in range(3)}
                        | {f"blue{i}.png": blue(i) for i in range(3)})
    response = requests.post(f"{http.url}/api/v1/batches", headers=headers, timeout=30,
                             files=[("files", ("visit.zip", archive, "application/zip")),
                                    ("files", ("notes.jpg", b"\xff\xd8\xff not an image"))])
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]

    def done():
        body = requests.get(f"{http.url}/api/v1/batches/{batch_id}", headers=headers,
                            timeout=30).json()
        return body if body["status"] in ("done", "failed") else None

    summary = wait_for(done, BATCH_TIMEOUT, "the batch to finish", interval=0.5)
    assert summary.get("error") is None
    assert summary["counts"] == {"total": 7, "done": 6, "failed": 1, "unassessable": 0,
                                 "flagged": 3, "pending": 0}

    store = store_for(configs["web"])
    with module_sessions() as session:
        upload_dir = session.get(Batch, batch_id).upload_dir
        stored = session.scalars(select(Image.stored_path).where(
            Image.batch_id == batch_id, Image.stored_path.is_not(None))).all()
    assert upload_dir.startswith(configs["web"].store_url + "/uploads/")
    assert len(stored) == 6 and all(ref.startswith(configs["web"].store_url) for ref in stored)
    # The JPEGs as they came, less their metadata; the PNGs as PNG of their pixels.
    assert sorted(store.read(ref)[:4] for ref in stored) == (
        [b"\x89PNG"] * 3 + [b"\xff\xd8\xff\xe0"] * 3)

    def heatmaps():
        with module_sessions() as session:
            refs = session.scalars(select(Image.heatmap_path).where(
                Image.batch_id == batch_id, Image.heatmap_path.is_not(None))).all()
        return refs if len(refs) == 3 else None

    for ref in wait_for(heatmaps, 60, "the three heatmaps"):
        assert ref.startswith(configs["web"].store_url + "/heatmaps/")
        assert store.read(ref).startswith(b"\x89PNG")

    def delivered():
        with module_sessions() as session:
            statuses = session.scalars(select(Delivery.status).join(Alert).join(Image).where(
                Image.batch_id == batch_id)).all()
        return len(statuses) == 6 and set(statuses) == {DeliveryStatus.SENT}

    wait_for(delivered, 60, "every alert (3 emails, 3 webhooks) to be sent")
    assert len([m for m in smtp.messages if batch_id in m.get_payload()]) == 3
    assert len([b for _, b in webhook.calls if b["batch_id"] == batch_id]) == 3
    with module_sessions() as session:
        assert session.get(Batch, batch_id).status is BatchStatus.DONE

    # No node wrote an image, an upload or a heatmap to its own disk.
    for node, config in configs.items():
        local = [p for p in config.home.rglob("*") if p.is_file()
                 and p.suffix.lower() in {".png", ".jpg", ".zip"}]
        assert local == [], node
        assert not (config.home / "store").exists(), node


def scrape(url: str) -> dict[tuple, float]:
    return samples(requests.get(url, timeout=30).text)


def test_metrics_agree_with_the_database(cluster, module_sessions):
    """After the batch above: the web app's /metrics counts images by status from the database
    and sees empty queues; the two workers' counters add up to the database's counts."""
    configs, http = cluster
    with module_sessions() as session:
        by_status = dict(session.execute(select(Image.status, func.count())
                                         .group_by(Image.status)).tuples().all())
        flagged = session.scalar(select(func.count()).select_from(Prediction)
                                 .where(Prediction.flagged.is_(True)))
    assert by_status[ImageStatus.DONE] == 6

    def idle():
        found = scrape(f"{http.url}/metrics")
        depth = {key: value for key, value in found.items() if key[0] == "dermscreen_queue_messages"}
        return found if len(depth) == 6 and not any(depth.values()) else None

    web = wait_for(idle, 60, "empty queues (waiting and reserved) on /metrics")
    for status in ImageStatus:
        assert web[("dermscreen_images", ("status", status.value))] == by_status.get(status, 0)
    assert web[("dermscreen_batches_submitted_total",)] >= 1

    scored = {"done": 0, "failed": 0, "unassessable": 0}
    chunks = flags = 0
    for node in ("worker1", "worker2"):
        found = scrape(f"http://127.0.0.1:{configs[node].metrics_port}/metrics")
        for outcome in scored:
            scored[outcome] += found.get(("dermscreen_images_scored_total", ("outcome", outcome)), 0)
        flags += found.get(("dermscreen_images_flagged_total",), 0)
        chunks += found.get(("dermscreen_chunk_duration_seconds_count",), 0)
        if found.get(("dermscreen_chunk_duration_seconds_count",)):
            assert found[("dermscreen_model_info", ("version", "test-1"))] == 1
    # Ingest fails the non-image; inference scores the rest (one image per chunk).
    assert scored == {"done": by_status[ImageStatus.DONE], "failed": 0, "unassessable": 0}
    assert flags == flagged == 3
    assert chunks >= 6
