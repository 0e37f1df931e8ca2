"""Deliveries to a real SMTP server and a real webhook receiver: once, with back-off on failure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from dermscreen.db import Alert, AlertStatus, Channel, Delivery, DeliveryStatus
from dermscreen.db.base import utcnow
from dermscreen.worker import jobs
from dermscreen.worker.notifier import DeliveryFailed
from tests.worker.conftest import blue, red
from tests.worker.receivers import SmtpReceiver, WebhookReceiver


def scored_alert(worker_config, submit, make_hospital, make_user, webhook_url):
    """Run a batch with one red image through ingest and inference; return its delivery ids."""
    hospital = make_hospital(webhook_url=webhook_url)
    derm = make_user("dermatologist", hospital=hospital)
    batch_id = submit(hospital, {"red.jpg": red(), "blue.png": blue()})
    (chunk,) = jobs.run_ingest(worker_config, batch_id)
    return jobs.run_predict_chunk(worker_config, chunk).delivery_ids, derm


def test_alert_is_delivered_by_email_and_webhook_exactly_once(
        sessions, worker_config, submit, make_hospital, make_user):
    with SmtpReceiver() as smtp, WebhookReceiver() as hook:
        worker_config.smtp_url = smtp.url
        delivery_ids, derm = scored_alert(worker_config, submit, make_hospital, make_user, hook.url)
        assert len(delivery_ids) == 2

        statuses = [jobs.run_deliver(worker_config, i) for i in delivery_ids]
        repeats = [jobs.run_deliver(worker_config, i) for i in delivery_ids]

        assert statuses == [DeliveryStatus.SENT, DeliveryStatus.SENT]
        assert repeats == [None, None]
        (message,) = smtp.messages
        assert message["To"] == derm.email and "melanoma alert: red.jpg" in message["Subject"]
        assert "/cases/" in message.get_payload()
        ((headers, body),) = hook.calls
        assert body["event"] == "melanoma_alert" and body["image"] == "red.jpg"
        assert body["melanoma_probability"] >= 0.5
        assert headers["Idempotency-Key"] == body["dedupe_key"]
    with sessions() as session:
        assert session.scalars(select(Alert.status)).one() is AlertStatus.SENT
        for delivery in session.scalars(select(Delivery)):
            assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
            assert delivery.sent_at is not None and delivery.last_error is None


def test_failed_webhook_backs_off_then_succeeds(sessions, worker_config, submit, make_hospital,
                                                make_user):
    worker_config.notify_backoff_seconds = 10
    with WebhookReceiver(fail_first=2) as hook:
        (delivery_id,), _ = scored_alert(worker_config, submit, make_hospital, make_user, hook.url)

        with pytest.raises(DeliveryFailed) as first:
            jobs.run_deliver(worker_config, delivery_id)
        assert first.value.retry_in == 10
        assert jobs.run_deliver(worker_config, delivery_id) is None  # not due: nothing sent
        with sessions() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery.attempts == 1 and "500" in delivery.last_error
            assert delivery.next_attempt_at is not None

        def make_due():
            with sessions.begin() as session:
                session.execute(update(Delivery).values(next_attempt_at=utcnow()))

        make_due()
        with pytest.raises(DeliveryFailed) as second:
            jobs.run_deliver(worker_config, delivery_id)
        assert second.value.retry_in == 20  # doubled
        make_due()
        assert jobs.run_deliver(worker_config, delivery_id) is DeliveryStatus.SENT
        assert len(hook.calls) == 1
    with sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 3)


def test_delivery_gives_up_after_the_last_retry(sessions, worker_config, submit, make_hospital,
                                                make_user):
    worker_config.notify_max_retries = 1
    with WebhookReceiver(fail_first=10) as hook:
        (delivery_id,), _ = scored_alert(worker_config, submit, make_hospital, make_user, hook.url)
        with pytest.raises(DeliveryFailed):
            jobs.run_deliver(worker_config, delivery_id)
        with sessions.begin() as session:
            session.execute(update(Delivery).values(next_attempt_at=utcnow()))
        assert jobs.run_deliver(worker_config, delivery_id) is DeliveryStatus.FAILED
        assert jobs.run_deliver(worker_config, delivery_id) is None
    with sessions() as session:
        assert session.get(Delivery, delivery_id).status is DeliveryStatus.FAILED
        assert session.scalars(select(Alert.status)).one() is AlertStatus.PENDING


def test_a_claimed_delivery_is_not_sent_again_until_its_claim_expires(
        sessions, worker_config, submit, make_hospital, make_user):
    with WebhookReceiver() as hook:
        (delivery_id,), _ = scored_alert(worker_config, submit, make_hospital, make_user, hook.url)
        with sessions.begin() as session:  # a worker claimed it, then died before sending
            session.execute(update(Delivery).values(
                attempts=1, next_attempt_at=utcnow() + timedelta(seconds=300)))
        assert jobs.run_deliver(worker_config, delivery_id) is None
        assert hook.calls == []
        with sessions.begin() as session:
            session.execute(update(Delivery).values(next_attempt_at=utcnow()))
        assert jobs.run_deliver(worker_config, delivery_id) is DeliveryStatus.SENT
        assert len(hook.calls) == 1


def test_no_email_deliveries_without_smtp(sessions, worker_config, submit, make_hospital,
                                          make_user):
    worker_config.smtp_url = ""
    delivery_ids, _ = scored_alert(worker_config, submit, make_hospital, make_user,
                                   "https://hooks.example.org/x")
    with sessions() as session:
        channels = [d.channel for d in session.scalars(select(Delivery))]
    assert len(delivery_ids) == 1 and channels == [Channel.WEBHOOK]
