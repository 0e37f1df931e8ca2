"""Every 4xx/5xx of the API as JSON: ``{"error": "not_found", "status": 404, "reason": "..."}``."""

from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, default_exceptions

API_PREFIX = "/api/"


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


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, api_or_default)


def abort(status: int, reason: str, reasons: list[str] | None = None):
    """Raise the HTTP error ``status`` with a reason (and optionally the list of them)."""
    error = default_exceptions[status](reason)
    error.reasons = reasons
    raise error
