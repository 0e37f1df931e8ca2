"""Alerts on flagged predictions and their deliveries to dermatologists (the outbox)."""

from __future__ import annotations

import enum
from typing import Optional

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dermscreen.db.base import Base, created, intpk, str_enum, timestamp


class AlertStatus(str, enum.Enum):
    PENDING = "pending"            # written with the prediction, not yet delivered
    SENT = "sent"                  # delivered to at least one recipient
    ACKNOWLEDGED = "acknowledged"  # a dermatologist has seen it
    RESOLVED = "resolved"          # reviewed and closed


class Channel(str, enum.Enum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the last retry


class Alert(Base):
    """One case a dermatologist should look at: a flagged prediction of one image."""

    __tablename__ = "alerts"

    id: Mapped[intpk]
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    # image id + model version: a redone chunk can never raise the same alert twice.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[AlertStatus] = mapped_column(str_enum(AlertStatus), default=AlertStatus.PENDING)
    created_at: Mapped[created]
    acknowledged_at: Mapped[Optional[timestamp]]
    acknowledged_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    resolved_at: Mapped[Optional[timestamp]]
    resolved_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))

    deliveries: Mapped[list["Delivery"]] = relationship(back_populates="alert")


class Delivery(Base):
    """One message of an alert to one recipient over one channel."""

    __tablename__ = "deliveries"

    id: Mapped[intpk]
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    recipient_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    target: Mapped[str] = mapped_column(String(500))  # email address or webhook URL
    # alert id + channel + target: the notifier never sends twice for the same key.
    dedupe_key: Mapped[str] = mapped_column(String(700), unique=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    # Not claimable before this time: a worker's claim while it sends, or the back-off after a
    # failed attempt. None: claimable now.
    next_attempt_at: Mapped[Optional[timestamp]]
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[created]
    sent_at: Mapped[Optional[timestamp]]

    alert: Mapped[Alert] = relationship(back_populates="deliveries")
