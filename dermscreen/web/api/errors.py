"""Every 4xx/5xx of the API as JSON: ``{"error": "not_found", "status": 404, "reason": "..."}``.

An unreachable database (a restart, a failover, a locked SQLite file) is a 503 with
``Retry-After`` everywhere, not a 500: clients and load balancers can tell "try again" from a bug.
"""

from __future__ import annotations

from flask import Flask, current_app, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, ServiceUnavailable, default_exceptions

API_PREFIX = "/api/"
RETRY_AFTER_SECONDS = 5


def json_error(error: HTTPException):
    body = {
        "error": error.name.lower().replace(" ", "_"),
        "status": error.code,
        "reason": error.description,
    }
    if getattr(error, "reasons", None):
        body["reasons"] = error.reasons
    response = jsonify(body)
    response.status_code = error.code
    for header, value in error.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value
    if error.code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dermscreen"'
    return response


def api_or_default(error: HTTPException):
    """App-wide: errors under /api/ that no API view raised (unknown URL, wrong method) as JSON."""
    if request.path.startswith(API_PREFIX):
        return json_error(error)
    return error


def database_unavailable(error: OperationalError):
    current_app.logger.warning("database unavailable: %s", error.orig)
    return api_or_default(ServiceUnavailable("the database is unavailable; try again shortly",
                                             retry_after=RETRY_AFTER_SECONDS))


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, api_or_default)
    app.register_error_handler(OperationalError, database_unavailable)


def abort(status: int, reason: str, reasons: list[str] | None = None):
    """Raise the HTTP error ``status`` with a reason (and optionally the list of them)."""
    error = default_exceptions[status](reason)
    error.reasons = reasons
    raise error
