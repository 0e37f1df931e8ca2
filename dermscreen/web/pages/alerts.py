"""The alerts inbox: open alerts first, the open count in the navigation, acknowledge and resolve."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from dermscreen import inbox
from dermscreen.db import audit
from dermscreen.db.alerts import Alert, AlertStatus
from dermscreen.db.tenancy import Hospital, Role
from dermscreen.web.auth.access import local_path, role_required, tenant_get
from dermscreen.web.extensions import database
from dermscreen.web.pages import bp

OPEN = (AlertStatus.PENDING, AlertStatus.SENT)
INBOX_LIMIT = 500


@bp.app_context_processor
def open_alert_count() -> dict:
    """``open_alerts`` for the navigation: unacknowledged alerts of the user's hospital."""
    if not current_user.is_authenticated or current_user.hospital_id is None:
        return {"open_alerts": 0}
    count = database.session.scalar(
        select(func.count(Alert.id)).where(Alert.hospital_id == current_user.hospital_id,
                                           Alert.status.in_(OPEN)))
    return {"open_alerts": count}


@bp.route("/alerts")
@role_required(Role.DERMATOLOGIST)
def alerts():
    rows = inbox.hospital_alerts(database.session, current_user.hospital_id, limit=INBOX_LIMIT)
    hospital = database.session.get(Hospital, current_user.hospital_id)
    audit.record(database.session, "view_alerts", hospital, user_id=current_user.id,
                 hospital_id=hospital.id, shown=len(rows))
    database.session.commit()
    return render_template("pages/alerts.html", alerts=rows)


def _back() -> str:
    return local_path(request.form.get("next"), url_for("pages.alerts"))


@bp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
@role_required(Role.DERMATOLOGIST)
def acknowledge_alert(alert_id: int):
    alert = tenant_get(Alert, alert_id)
    changed = inbox.acknowledge(database.session, alert, user_id=current_user.id)
    database.session.commit()
    flash("Alert acknowledged." if changed else "That alert was already acknowledged.", "success")
    return redirect(_back(), code=303)


@bp.route("/alerts/<int:alert_id>/resolve", methods=["POST"])
@role_required(Role.DERMATOLOGIST)
def resolve_alert(alert_id: int):
    alert = tenant_get(Alert, alert_id)
    changed = inbox.resolve(database.session, alert, user_id=current_user.id)
    database.session.commit()
    flash("Alert resolved." if changed else "That alert was already resolved.", "success")
    return redirect(_back(), code=303)
