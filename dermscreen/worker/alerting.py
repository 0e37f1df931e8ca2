"""The alert policy and the outbox: which predictions alert, and whom each alert goes to.

A prediction's tier (``dermscreen.tiers``) is ``alert`` at or above the alert threshold (the
hospital's or the model version's), ``review`` at or above the version's review threshold, else
``none``; only the alert tier is flagged and alerts.

An alert and its deliveries are written in the transaction that writes the prediction, so an
alert exists exactly when its flagged prediction does; the notifier sends the deliveries later.
Dedupe keys (image + model version; alert + channel + target) are unique in the database.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dermscreen import registry
from dermscreen.config import Config
from dermscreen.db.alerts import Alert, Channel, Delivery
from dermscreen.db.screening import Image, ModelVersion
from dermscreen.db.tenancy import Hospital, Role, User


def dialect_insert(session: Session, model):
    """``INSERT`` with ``ON CONFLICT`` support for the session's database."""
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


def alert_threshold(hospital: Hospital, version: ModelVersion) -> float:
    """The hospital's own threshold if it was set for ``version``, else the bundle's calibrated
    one (a threshold chosen for one model's probabilities means something else for another's)."""
    if hospital.alert_threshold is not None and hospital.alert_threshold_version_id == version.id:
        return hospital.alert_threshold
    return version.alert_threshold


def review_threshold(version: ModelVersion) -> float:
    """The threshold of ``version``'s review tier (listed, no alert); its alert threshold for a
    bundle without a review tier (so the tier stays empty). Hospitals do not change it."""
    shipped = registry.review_threshold(version)
    return version.alert_threshold if shipped is None else float(shipped)


def alert_dedupe_key(image_id: str, version_id: int) -> str:
    return f"{image_id}:{version_id}"


def recipients(session: Session, config: Config,
               hospital: Hospital) -> list[tuple[int | None, Channel, str]]:
    """(user id, channel, target) for each message an alert of ``hospital`` sends: an email to
    each active dermatologist of the hospital (when SMTP is configured) and its webhook."""
    dermatologists = [] if not config.smtp_url else session.scalars(
        select(User).where(User.hospital_id == hospital.id, User.role == Role.DERMATOLOGIST,
                           User.active.is_(True), User.notify_email.is_(True))
        .order_by(User.id)
    ).all()
    targets = [(user.id, Channel.EMAIL, user.email) for user in dermatologists]
    if hospital.webhook_url:
        targets.append((None, Channel.WEBHOOK, hospital.webhook_url))
    return targets


def raise_alert(session: Session, config: Config, image: Image, prediction_id: int,
                version: ModelVersion, hospital: Hospital) -> list[int]:
    """Write the alert for a flagged prediction and one delivery per recipient and channel.

    Returns the new delivery ids; none when this alert already exists (a redone chunk).
    """
    inserted = session.execute(
        dialect_insert(session, Alert)
        .values(hospital_id=hospital.id, image_id=image.id, prediction_id=prediction_id,
                dedupe_key=alert_dedupe_key(image.id, version.id))
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Alert.id)
    ).scalar()
    if inserted is None:
        return []
    deliveries = [
        Delivery(alert_id=inserted, recipient_id=user_id, channel=channel, target=target,
                 dedupe_key=f"{inserted}:{channel.value}:{target}")
        for user_id, channel, target in recipients(session, config, hospital)
    ]
    session.add_all(deliveries)
    session.flush()
    return [delivery.id for delivery in deliveries]
