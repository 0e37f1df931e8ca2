"""Who is signed in, what their role lets them open, and which hospital's rows they may see.

Every page is behind ``role_required(...)``; every row a page loads by id goes through
``tenant_get`` so that a user of one hospital gets 404 (not 403, which would confirm the id
exists) for another hospital's batch, image or alert. Admins belong to no hospital and see all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from urllib.parse import urlsplit

from flask import abort
from flask_login import UserMixin, current_user, login_required

from dermscreen.db.tenancy import Hospital, Role, User
from dermscreen.web.extensions import database, login_manager

login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to open that page."
login_manager.login_message_category = "info"
login_manager.session_protection = "strong"


@dataclass
class Account(UserMixin):
    """The signed-in user as the pages see it (a detached copy of the ``users`` row)."""

    id: int
    email: str
    name: str
    role: Role
    hospital_id: int | None
    active: bool

    @classmethod
    def of(cls, user: User) -> "Account":
        return cls(user.id, user.email, user.name, user.role, user.hospital_id, user.active)

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def display_name(self) -> str:
        return self.name or self.email

    def has_role(self, *roles: Role) -> bool:
        return self.role in roles


@login_manager.user_loader
def load_account(user_id: str) -> Account | None:
    user = database.session.get(User, int(user_id))
    return Account.of(user) if user is not None and user.active else None


def role_required(*roles: Role):
    """Let signed-in users with one of ``roles`` through; others get 403, strangers the sign-in."""

    def decorate(view):
        @wraps(view)
        @login_required
        def guarded(*args, **kwargs):
            if not current_user.has_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        return guarded

    return decorate


def tenant_get(model, key):
    """The ``model`` row ``key`` if the signed-in user's hospital owns it (admins: any), else 404."""
    row = database.session.get(model, key)
    if row is None:
        abort(404)
    if current_user.hospital_id is not None and row.hospital_id != current_user.hospital_id:
        abort(404)
    return row


def audit_scope():
    """What a list page covers, for the audit log: the user's hospital, or (admins) the user."""
    if current_user.hospital_id is not None:
        return database.session.get(Hospital, current_user.hospital_id)
    return database.session.get(User, current_user.id)


# Pages load scripts, styles and images from this site only (no inline script; inline style
# attributes draw the probability bars), and may not be framed by another site.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'self'; "
                           "form-action 'self'; frame-ancestors 'none'")


def security_headers(response):
    """``after_request`` of the page blueprints."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def local_path(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site, else ``default`` (no open redirects)."""
    if (target and target.startswith("/") and not target.startswith(("//", "/\\"))
            and not urlsplit(target).netloc):
        return target
    return default
