"""Admin pages (role admin): hospitals and their alert thresholds, users, API tokens, models.

    GET/POST /admin/hospitals   create; per-hospital alert threshold and webhook
    GET/POST /admin/users       create users (submitter, dermatologist, admin)
    GET/POST /admin/tokens      issue (the token is shown once) and revoke API tokens
    GET/POST /admin/models      registered model versions; register a bundle; activate one
"""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from dermscreen.web.admin import routes  # noqa: E402,F401
