"""A hospital's alerts as dermatologists handle them: list, acknowledge, resolve (audited).

Used by the API (token) and the pages (signed-in user); the caller commits::

    rows = hospital_alerts(session, hospital_id, status="pending")
    acknowledge(session, alert, user_id=user.id)
    resolve(session, alert, token_id=token.id)
"""

from __future__ import annotations

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from dermscreen.db import audit
from dermscreen.db.alerts import Alert, AlertStatus
from dermscreen.db.base import utcnow
from dermscreen.db.screening import Image, Prediction
from dermscreen.results import isoformat

# Unhandled alerts first, then by age (newest first).
_OPEN_FIRST = case((Alert.status.in_([AlertStatus.PENDING, AlertStatus.SENT]), 0),
                   (Alert.status == AlertStatus.ACKNOWLEDGED, 1), else_=2)


def hospital_alerts(session: Session, hospital_id: int, status: AlertStatus | str | None = None,
                    limit: int = 100, offset: int = 0) -> list[dict]:
    """The hospital's alerts as rows (see ``alert_row``), open ones first, newest first."""
    query = (select(Alert, Image, Prediction)
             .join(Image, Alert.image_id == Image.id)
             .join(Prediction, Alert.prediction_id == Prediction.id)
             .where(Alert.hospital_id == hospital_id))
    if status is not None:
        query = query.where(Alert.status == AlertStatus(status))
    query = (query.order_by(_OPEN_FIRST, Alert.created_at.desc(), Alert.id.desc())
             .limit(limit).offset(offset))
    return [alert_row(*row) for row in session.execute(query)]


def alert_row(alert: Alert, image: Image, prediction: Prediction) -> dict:
    return {
        "id": alert.id,
        "status": alert.status.value,
        "image_id": alert.image_id,
        "image": image.original_name,
        "batch_id": image.batch_id,
        "melanoma_probability": prediction.melanoma_probability,
        "threshold": prediction.threshold,
        "created_at": isoformat(alert.created_at),
        "acknowledged_at": isoformat(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "resolved_at": isoformat(alert.resolved_at),
        "resolved_by": alert.resolved_by,
    }


def describe(session: Session, alert: Alert) -> dict:
    """One alert as a row (see ``alert_row``)."""
    return alert_row(alert, session.get(Image, alert.image_id),
                     session.get(Prediction, alert.prediction_id))


def acknowledge(session: Session, alert: Alert, user_id: int | None = None,
                token_id: int | None = None) -> bool:
    """Mark ``alert`` seen. Returns False (and records nothing) when it already was."""
    if alert.status in (AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED):
        return False
    alert.status = AlertStatus.ACKNOWLEDGED
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by = user_id
    audit.record(session, "acknowledge", alert, user_id=user_id, token_id=token_id)
    return True


def resolve(session: Session, alert: Alert, user_id: int | None = None,
            token_id: int | None = None) -> bool:
    """Close ``alert`` (acknowledging it too if nobody had). False when it already was closed."""
    if alert.status is AlertStatus.RESOLVED:
        return False
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = utcnow(), user_id
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at = utcnow()
    alert.resolved_by = user_id
    audit.record(session, "resolve", alert, user_id=user_id, token_id=token_id)
    return True
