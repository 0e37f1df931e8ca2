"""The hospital API under /api/v1: token authentication, tenant scoping, JSON errors.

Routes live in ``batches`` (submissions, the list, progress, results, images), ``alerts`` and
``spec`` (the OpenAPI document). Every route except the document needs
``Authorization: Bearer <token>``.
"""

from flask import Blueprint

from dermscreen.web.api import auth, errors

bp = Blueprint("api", __name__)
bp.before_request(auth.require_token)
bp.register_error_handler(errors.HTTPException, errors.json_error)

from dermscreen.web.api import alerts, batches, spec  # noqa: E402,F401  (routes on bp)
