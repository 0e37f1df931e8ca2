"""Admin pages (role admin): hospitals and their alert thresholds, users, API tokens, models.

    GET/POST /admin/hospitals   create; per-hospital alert threshold and webhook
    GET/POST /admin/hospitals/<id>/threshold   pick a hospital's alert threshold from the active
                                version's validation curve (drawn as inline SVG)
    GET/POST /admin/users       create users (submitter, dermatologist, admin)
    GET/POST /admin/tokens      issue (the token is shown once) and revoke API tokens
    GET/POST /admin/models      registered model versions; register a bundle; activate one
"""

from flask import Blueprint

from dermscreen.web.auth.access import security_headers

bp = Blueprint("admin", __name__)
bp.after_request(security_headers)

from dermscreen.web.admin import routes  # noqa: E402,F401
