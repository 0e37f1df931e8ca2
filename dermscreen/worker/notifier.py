"""The notifier: send one delivery of an alert by email (SMTP) or webhook (JSON POST).

    status = deliver(sessions, config, delivery_id)   # raises DeliveryFailed(retry_in) to retry

A delivery is claimed in its own committed transaction before anything is sent (``next_attempt_at``
moves past the task time limit), so a duplicate or redelivered message finds it claimed or sent
and sends nothing. A failed attempt records its error and the back-off before the next one
(doubling, at most an hour); after ``notify_max_retries`` retries the delivery is ``failed``.
The delivery's dedupe key travels with the message (webhook ``Idempotency-Key`` header, email
``Message-ID``) so receivers can drop a copy sent by a worker that died before recording it.
"""

from __future__ import annotations

import hashlib
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import requests
from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from dermscreen.config import Config
from dermscreen.db.alerts import Alert, AlertStatus, Channel, Delivery, DeliveryStatus
from dermscreen.db.base import utcnow
from dermscreen.db.screening import Image, Prediction

SEND_TIMEOUT = 30
MAX_BACKOFF = 3600


class DeliveryFailed(Exception):
    """This attempt failed; try again in ``retry_in`` seconds."""

    def __init__(self, reason: str, retry_in: float):
        super().__init__(reason)
        self.retry_in = retry_in


def backoff(config: Config, attempts: int) -> float:
    return float(min(config.notify_backoff_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


def alert_message(session: Session, config: Config, delivery: Delivery) -> dict:
    """What a dermatologist is told: enough to find the case, no patient data."""
    alert = delivery.alert
    image = session.get(Image, alert.image_id)
    prediction = session.get(Prediction, alert.prediction_id)
    return {
        "event": "melanoma_alert",
        "alert_id": alert.id,
        "dedupe_key": delivery.dedupe_key,
        "hospital_id": alert.hospital_id,
        "batch_id": image.batch_id,
        "image_id": image.id,
        "image": image.original_name,
        "melanoma_probability": round(prediction.melanoma_probability, 4),
        "threshold": prediction.threshold,
        "model_version": prediction.model_version.version,
        "url": f"{config.public_url.rstrip('/')}/cases/{image.id}",
    }


def send_email(config: Config, to: str, message: dict) -> None:
    """Send through ``config.smtp_url``: ``smtp://[user:pass@]host[:port]`` (STARTTLS when the
    server offers it) or ``smtps://`` (TLS from the start)."""
    url = urlsplit(config.smtp_url)
    email = EmailMessage()
    email["From"] = config.mail_from
    email["To"] = to
    email["Subject"] = (f"[dermscreen] melanoma alert: {message['image']} "
                        f"(p={message['melanoma_probability']:.2f})")
    email["Message-ID"] = (f"<{hashlib.sha256(message['dedupe_key'].encode()).hexdigest()[:32]}"
                           f"@dermscreen>")
    email.set_content(
        f"The model flagged an image for melanoma review: its melanoma probability is at or above"
        f" the alert threshold, which is set low so that few melanomas go unflagged.\n\n"
        f"Image: {message['image']} (batch {message['batch_id']})\n"
        f"Melanoma probability: {message['melanoma_probability']:.3f} "
        f"(alert threshold {message['threshold']:.3f}, model {message['model_version']})\n\n"
        f"Review the case: {message['url']}\n"
    )
    smtp_class = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    with smtp_class(url.hostname, url.port or (465 if url.scheme == "smtps" else 25),
                    timeout=SEND_TIMEOUT) as smtp:
        if url.scheme == "smtp":
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
        if url.username:
            smtp.login(unquote(url.username), unquote(url.password or ""))
        smtp.send_message(email)


def send_webhook(target: str, message: dict) -> None:
    response = requests.post(target, json=message, timeout=SEND_TIMEOUT,
                             headers={"Idempotency-Key": message["dedupe_key"]})
    response.raise_for_status()


def _claim(session: Session, config: Config, delivery_id: int) -> bool:
    """Claim a due delivery for as long as a task may run, so only a dead worker's claim ends."""
    now = utcnow()
    return bool(session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING,
               or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now))
        .values(next_attempt_at=now + timedelta(seconds=config.task_time_limit),
                attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount)


def deliver(sessions: sessionmaker, config: Config, delivery_id: int) -> DeliveryStatus | None:
    """Send delivery ``delivery_id`` once; None when it is not due (claimed, sent or waiting)."""
    with sessions.begin() as session:
        if not _claim(session, config, delivery_id):
            return None
        delivery = session.get(Delivery, delivery_id)
        channel, target = delivery.channel, delivery.target
        message = alert_message(session, config, delivery)
    try:
        if channel is Channel.EMAIL:
            send_email(config, target, message)
        else:
            send_webhook(target, message)
    except (OSError, smtplib.SMTPException, requests.RequestException) as error:
        return _record_failure(sessions, config, delivery_id, f"{type(error).__name__}: {error}")
    with sessions.begin() as session:
        delivery = session.get(Delivery, delivery_id)
        delivery.status, delivery.sent_at = DeliveryStatus.SENT, utcnow()
        delivery.next_attempt_at, delivery.last_error = None, None
        session.execute(update(Alert).where(Alert.id == delivery.alert_id,
                                            Alert.status == AlertStatus.PENDING)
                        .values(status=AlertStatus.SENT)
                        .execution_options(synchronize_session=False))
    return DeliveryStatus.SENT


def _record_failure(sessions: sessionmaker, config: Config, delivery_id: int,
                    reason: str) -> DeliveryStatus:
    with sessions.begin() as session:
        delivery = session.get(Delivery, delivery_id)
        delivery.last_error = reason[:2000]
        if delivery.attempts > config.notify_max_retries:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            return DeliveryStatus.FAILED
        retry_in = backoff(config, delivery.attempts)
        delivery.next_attempt_at = utcnow() + timedelta(seconds=retry_in)
    raise DeliveryFailed(reason, retry_in)
