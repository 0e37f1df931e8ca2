"""Alerts of the token's hospital: list (``?status=``), acknowledge, resolve."""

from __future__ import annotations

from flask import g, jsonify, request

from dermscreen import inbox
from dermscreen.db.alerts import Alert, AlertStatus
from dermscreen.web.api import bp
from dermscreen.web.api.auth import audit_list, owned
from dermscreen.web.api.errors import abort
from dermscreen.web.api.paging import page_args
from dermscreen.web.extensions import database


@bp.get("/alerts")
def list_alerts():
    status = request.args.get("status")
    allowed = [member.value for member in AlertStatus]
    if status is not None and status not in allowed:
        abort(400, f"status must be one of {', '.join(allowed)}")
    limit, offset = page_args()
    rows = inbox.hospital_alerts(database.session, g.token.hospital_id, status, limit, offset)
    audit_list("view_alerts", shown=len(rows), status=status, limit=limit, offset=offset)
    return jsonify({"alerts": rows, "limit": limit, "offset": offset})


def _act(alert_id: int, action):
    alert = owned(Alert, alert_id)
    session = database.session
    action(session, alert, user_id=g.token.user_id, token_id=g.token.id)
    session.commit()
    return jsonify(inbox.describe(session, alert))


@bp.post("/alerts/<int:alert_id>/acknowledge")
def acknowledge_alert(alert_id: int):
    return _act(alert_id, inbox.acknowledge)


@bp.post("/alerts/<int:alert_id>/resolve")
def resolve_alert(alert_id: int):
    return _act(alert_id, inbox.resolve)
