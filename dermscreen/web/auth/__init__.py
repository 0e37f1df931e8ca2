"""Sign-in for people (dermatologists, hospital staff, admins): sessions, roles and tenancy.

    GET/POST /login     sign in (email + password, Argon2 verified)
    POST     /logout    sign out
"""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from dermscreen.web.auth import access, routes  # noqa: E402,F401  (registers views and the loader)

bp.after_request(access.security_headers)
