"""Bearer-token authentication and tenant scoping for the API.

``g.token`` is the caller's ApiToken; ``owned(Model, id)`` loads a row of the token's hospital or
answers 404, the same answer as for an id that does not exist (no hint that it belongs to another);
``audit_list`` records that the token listed its hospital's rows.
"""

from __future__ import annotations

from flask import g, request

from dermscreen.accounts import authenticate_token
from dermscreen.db import audit
from dermscreen.db.tenancy import Hospital
from dermscreen.web.api.errors import abort
from dermscreen.web.extensions import database

PUBLIC_ENDPOINTS = {"api.openapi"}


def require_token():
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    scheme, _, plaintext = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not plaintext.strip():
        abort(401, "missing API token: send 'Authorization: Bearer <token>'")
    session = database.session
    token = authenticate_token(session, plaintext.strip())
    if token is None:
        abort(401, "invalid or revoked API token")
    session.commit()  # last_used_at
    g.token = token
    return None


def owned(model, object_id):
    """The ``model`` row with this id belonging to the token's hospital, else 404."""
    row = database.session.get(model, object_id)
    if row is None or row.hospital_id != g.token.hospital_id:
        abort(404, f"no {model.__name__.lower()} {object_id}")
    return row


def audit_list(action: str, **detail) -> None:
    """Audit entry (committed) for a list of the token's hospital's rows, e.g. ``view_batches``."""
    session = database.session
    audit.record(session, action, session.get(Hospital, g.token.hospital_id),
                 token_id=g.token.id, user_id=g.token.user_id, hospital_id=g.token.hospital_id,
                 **detail)
    session.commit()
