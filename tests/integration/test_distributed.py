"""The distributed system with real services: an archive submitted over HTTP with an API token is
scored by `dermscreen worker` processes (Celery on Redis), results land in PostgreSQL, alerts reach
a real SMTP server and a real webhook receiver exactly once, tenants see only their own batches,
hostile uploads are refused with reasons while the good images are scored, a chunk held by a
worker killed with SIGKILL runs again on the other worker within a minute (its lease passes) and
loses no image and doubles no alert, and the beat-run reconciler sends
what a lost message left behind.

    pytest tests/integration -q          # needs PostgreSQL on :5432 and Redis on :6379
"""

from __future__ import annotations

import io
import signal
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from dermscreen import accounts
from dermscreen.db import (Alert, Batch, BatchStatus, Channel, Delivery, DeliveryStatus, Image,
                           ImageStatus, Prediction, Role)
from dermscreen.db.base import utcnow
from dermscreen.registry import register_bundle
from dermscreen.submissions import submit_batch
from dermscreen.worker.dispatch import enqueue_chunks, enqueue_deliveries, enqueue_ingest
from tests.integration.conftest import (HttpApp, queue_depth, redis_database, service_config,
                                        wait_for)
from tests.factories import CLASSES
from tests.worker.conftest import blue, bomb_png_bytes, hostile_batch, red, zip_bytes
from tests.worker.receivers import WebhookReceiver

pytestmark = [pytest.mark.services, pytest.mark.slow]
BATCH_TIMEOUT = 90


@pytest.fixture(scope="module")
def service(tmp_path_factory, postgres_url, smtp, webhook, tiny_bundle, workers):
    """Redis DB 13, a CPU worker (ingest, notify) and an inference worker, the API over HTTP."""
    config = service_config(tmp_path_factory.mktemp("service"), postgres_url,
                            redis_database(13), tiny_bundle, smtp.url)
    workers.start("cpu", config, "ingest,notify")
    workers.start("inference", config, "inference")
    with HttpApp(config) as http:
        yield config, http


@pytest.fixture(scope="module")
def tenants(module_sessions, webhook):
    """Hospital A (two dermatologists, a webhook, a token) and hospital B (a token)."""
    with module_sessions.begin() as session:
        a = accounts.create_hospital(session, "Hospital A", webhook_url=webhook.url)
        b = accounts.create_hospital(session, "Hospital B")
        derms = [accounts.create_user(session, f"derm{i}@a.example.org", Role.DERMATOLOGIST,
                                      hospital=a) for i in (1, 2)]
        accounts.create_user(session, "derm@b.example.org", Role.DERMATOLOGIST, hospital=b)
        _, token_a = accounts.issue_token(session, a, name="A")
        _, token_b = accounts.issue_token(session, b, name="B")
    return {"a": a, "b": b, "dermatologists": derms, "token_a": token_a, "token_b": token_b}


def api(http, token, method, path, **kwargs):
    return requests.request(method, f"{http.url}/api/v1{path}",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)


def wait_batch_done(http, token, batch_id) -> dict:
    def done():
        body = api(http, token, "GET", f"/batches/{batch_id}").json()
        return body if body["status"] == "done" else None

    return wait_for(done, BATCH_TIMEOUT, f"batch {batch_id} to finish", interval=0.5)


def messages_for(smtp, webhook, batch_id):
    emails = [m for m in smtp.messages if batch_id in m.get_payload()]
    hooks = [body for _, body in webhook.calls if body["batch_id"] == batch_id]
    return emails, hooks


def test_archive_over_http_is_scored_stored_and_alerted_exactly_once(
        service, tenants, module_sessions, smtp, webhook):
    config, http = service
    archive = zip_bytes({"visit/red1.jpg": red(1), "visit/red2.jpg": red(2),
                         "visit/blue1.png": blue(1), "visit/blue2.png": blue(2)})
    response = api(http, tenants["token_a"], "POST", "/batches",
                   files=[("files", ("visit.zip", archive, "application/zip")),
                          ("files", ("single.jpg", red(3), "image/jpeg"))])
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]

    summary = wait_batch_done(http, tenants["token_a"], batch_id)

    assert summary["counts"] == {"total": 5, "done": 5, "failed": 0, "unassessable": 0,
                                 "flagged": 3, "pending": 0}
    rows = api(http, tenants["token_a"], "GET", f"/batches/{batch_id}/results").json()["results"]
    flagged = {row["image"] for row in rows if row["flagged"]}
    assert flagged == {"visit.zip/visit/red1.jpg", "visit.zip/visit/red2.jpg", "single.jpg"}
    with module_sessions() as session:  # the system of record is PostgreSQL
        assert session.get_bind().dialect.name == "postgresql"
        predictions = session.execute(
            select(Image.original_name, Prediction.melanoma_probability, Prediction.flagged)
            .join(Prediction, Prediction.image_id == Image.id)
            .where(Image.batch_id == batch_id)).all()
        assert len(predictions) == 5
        assert {name for name, _, is_flagged in predictions if is_flagged} == flagged

    # Two dermatologists by email and the hospital's webhook, for each of the three alerts.
    def delivered():
        emails, hooks = messages_for(smtp, webhook, batch_id)
        return len(emails) >= 6 and len(hooks) >= 3

    wait_for(delivered, 60, "the alert emails and webhooks")
    time.sleep(2)  # anything doubled would arrive by now
    emails, hooks = messages_for(smtp, webhook, batch_id)
    assert len(emails) == 6 and len(hooks) == 3
    assert sorted(m["To"] for m in emails) == sorted(
        [d.email for d in tenants["dermatologists"]] * 3)
    assert {hook["image"] for hook in hooks} == flagged
    with module_sessions() as session:
        statuses = session.scalars(
            select(Delivery.status).join(Alert).join(Image).where(Image.batch_id == batch_id)).all()
        assert statuses == [DeliveryStatus.SENT] * 9

    # Redelivered messages (every chunk and delivery sent again) change nothing.
    with module_sessions() as session:
        image_ids = session.scalars(select(Image.id).where(Image.batch_id == batch_id)).all()
        delivery_ids = session.scalars(
            select(Delivery.id).join(Alert).join(Image).where(Image.batch_id == batch_id)).all()
    enqueue_chunks(config, [[image_id] for image_id in image_ids])
    enqueue_deliveries(config, list(delivery_ids))
    wait_for(lambda: queue_depth(config.broker_url) == 0, 60, "the redelivered messages")
    time.sleep(1)
    assert [len(found) for found in messages_for(smtp, webhook, batch_id)] == [6, 3]
    with module_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Prediction).join(Image)
                              .where(Image.batch_id == batch_id)) == 5
        assert session.scalar(select(func.count()).select_from(Alert).join(Image)
                              .where(Image.batch_id == batch_id)) == 3
        assert session.get(Batch, batch_id).done_images == 5

    # Another hospital's token sees nothing of it.
    token_b = tenants["token_b"]
    assert api(http, token_b, "GET", f"/batches/{batch_id}").status_code == 404
    assert api(http, token_b, "GET", f"/batches/{batch_id}/results").status_code == 404
    assert api(http, token_b, "GET", f"/images/{rows[0]['image_id']}").status_code == 404
    assert api(http, token_b, "GET", "/alerts").json()["alerts"] == []
    assert len(api(http, tenants["token_a"], "GET", "/alerts").json()["alerts"]) == 3
    assert api(http, "not-a-token", "GET", f"/batches/{batch_id}").status_code == 401


def test_hostile_uploads_are_refused_with_reasons_while_good_images_are_scored(
        service, tenants, smtp, webhook):
    _, http = service
    uploads = hostile_batch() | {"bomb-alone.png": bomb_png_bytes()}
    response = api(http, tenants["token_a"], "POST", "/batches",
                   files=[("files", (name, data)) for name, data in uploads.items()])
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]

    summary = wait_batch_done(http, tenants["token_a"], batch_id)

    rows = {row["image"]: row for row in
            api(http, tenants["token_a"], "GET", f"/batches/{batch_id}/results").json()["results"]}
    assert {name for name, row in rows.items() if row["status"] == "done"} == {
        "red.jpg", "blue.png", "good.zip/lesions/red2.jpg"}
    assert rows["red.jpg"]["flagged"] and not rows["blue.png"]["flagged"]
    reasons = {name: row["error"] for name, row in rows.items() if row["status"] == "failed"}
    assert "outside the archive" in reasons["traversal.zip"]
    assert "a link" in reasons["symlink.tar.gz"]
    assert "compression ratio" in reasons["bomb.zip"]
    assert "decompression bomb" in reasons["good.zip/lesions/bomb.png"]
    assert "decompression bomb" in reasons["bomb-alone.png"]
    assert "corrupt image" in reasons["truncated.jpg"]
    assert "not a recognised image" in reasons["good.zip/lesions/notes.jpg"]
    assert summary["counts"]["failed"] == len(reasons) == 7
    assert summary["counts"]["done"] == 3


@pytest.fixture
def kill_config(tmp_path, postgres_url, smtp, tiny_bundle):
    """Redis DB 14; the production lease and reconcile interval; Redis itself would hand a dead
    worker's message on only after 10 minutes, so what recovers it is the lease."""
    return service_config(tmp_path, postgres_url, redis_database(14), tiny_bundle, smtp.url,
                          task_time_limit=500, visibility_timeout=600)


def test_a_chunk_held_by_a_killed_worker_runs_again_on_the_other_within_a_minute(
        kill_config, tenants, module_sessions, workers, smtp, webhook):
    assert (kill_config.chunk_lease_seconds, kill_config.reconcile_interval_seconds) == (30, 10)
    workers.start("rescuer", kill_config, "ingest,inference,notify", beat=True)
    victim = workers.start("victim", kill_config, "inference", chunk_delay=5.0)
    wait_for(lambda: workers.ready("rescuer") and workers.ready("victim"), BATCH_TIMEOUT,
             "both workers to start")
    names = [f"red{i}.jpg" for i in range(4)] + [f"blue{i}.png" for i in range(4)]
    with module_sessions.begin() as session:
        uploads = [(name, io.BytesIO(red(i) if name.startswith("red") else blue(i)))
                   for i, name in enumerate(names)]
        batch_id = submit_batch(session, kill_config, tenants["a"].id, uploads).id
    enqueue_ingest(kill_config, batch_id)

    [held, *_] = wait_for(lambda: workers.held("victim"), BATCH_TIMEOUT,
                          "the victim to take a chunk", interval=0.1)
    assert workers.kill("victim") == -9 and victim.returncode == -9
    killed_at = time.monotonic()

    def rescued():
        with module_sessions() as session:
            return all(session.get(Image, image_id).status is ImageStatus.DONE
                       for image_id in held)

    wait_for(rescued, 60, "the killed worker's chunk to run again on the rescuer", interval=0.5)
    print(f"the killed worker's chunk was done {time.monotonic() - killed_at:.1f} s after the kill")

    def finished():
        with module_sessions() as session:
            batch = session.get(Batch, batch_id)
            return batch.status is BatchStatus.DONE and batch

    batch = wait_for(finished, BATCH_TIMEOUT, "the rescuer to finish the batch", interval=0.5)
    assert (batch.total_images, batch.done_images, batch.failed_images, batch.flagged_images) == (
        8, 8, 0, 4)
    with module_sessions() as session:
        images = session.scalars(select(Image).where(Image.batch_id == batch_id)).all()
        assert {image.status for image in images} == {ImageStatus.DONE}
        assert {image.held_until for image in images} == {None}
        per_image = session.execute(
            select(Prediction.image_id, func.count()).join(Image)
            .where(Image.batch_id == batch_id).group_by(Prediction.image_id)).all()
        assert len(per_image) == 8 and {n for _, n in per_image} == {1}
        alerts = session.scalars(select(Alert).join(Image).where(Image.batch_id == batch_id)).all()
        assert sorted(session.get(Image, a.image_id).original_name for a in alerts) == names[:4]

    def delivered():
        emails, hooks = messages_for(smtp, webhook, batch_id)
        return len(emails) >= 8 and len(hooks) >= 4

    wait_for(delivered, 60, "the alerts of the rescued batch")
    time.sleep(2)
    emails, hooks = messages_for(smtp, webhook, batch_id)
    assert (len(emails), len(hooks)) == (8, 4)  # 4 alerts x (2 dermatologists + 1 webhook)
    assert len({hook["dedupe_key"] for hook in hooks}) == 4
    workers.kill("rescuer", signal.SIGTERM)


def test_beat_reconciler_sends_a_lost_delivery_and_celery_retries_a_failed_attempt(
        tmp_path, postgres_url, smtp, tiny_bundle, module_sessions, workers):
    """A delivery whose message never reached the broker is found by the reconciler (run by
    celery beat inside `dermscreen worker --beat`); its first attempt fails (HTTP 500) and the
    task's retry sends it, once."""
    config = service_config(tmp_path, postgres_url, redis_database(14), tiny_bundle, smtp.url,
                            reconcile_interval_seconds=1)
    with WebhookReceiver(fail_first=1) as hook:
        with module_sessions.begin() as session:
            hospital = accounts.create_hospital(session, "Hospital C", webhook_url=hook.url)
            version = register_bundle(session, tiny_bundle)
            batch = Batch(hospital_id=hospital.id, status=BatchStatus.DONE, upload_dir="/gone",
                          total_images=1, done_images=1, flagged_images=1)
            session.add(batch)
            session.flush()
            image = Image(batch_id=batch.id, hospital_id=hospital.id, original_name="lost.jpg",
                          status=ImageStatus.DONE)
            session.add(image)
            session.flush()
            prediction = Prediction(
                image_id=image.id, model_version_id=version.id,
                probabilities={name: 1 / len(CLASSES) for name in CLASSES},
                melanoma_probability=0.9, diagnosis="melanoma", threshold=0.5,
                review_threshold=0.2, tier="alert", flagged=True)
            session.add(prediction)
            session.flush()
            alert = Alert(hospital_id=hospital.id, image_id=image.id, prediction_id=prediction.id,
                          dedupe_key=f"{image.id}:{version.id}")
            session.add(alert)
            session.flush()
            delivery = Delivery(alert_id=alert.id, channel=Channel.WEBHOOK, target=hook.url,
                                dedupe_key=f"{alert.id}:webhook:{hook.url}",
                                created_at=utcnow() - timedelta(minutes=5))
            session.add(delivery)
        workers.start("notifier", config, "ingest,notify", beat=True)

        def sent():
            with module_sessions() as session:
                row = session.get(Delivery, delivery.id)
                return row.status is DeliveryStatus.SENT and row

        row = wait_for(sent, 60, "the reconciled delivery to be sent")
        time.sleep(3)  # beat keeps reconciling every second: nothing may be sent twice
        assert [body["image"] for _, body in hook.calls] == ["lost.jpg"]
        assert hook.failures_left == 0
        with module_sessions() as session:
            row = session.get(Delivery, delivery.id)
            assert (row.status, row.attempts) == (DeliveryStatus.SENT, 2)
