"""Hospitals, users, passwords and API tokens. The caller owns the session and commits.

Passwords are hashed with Argon2id at argon2-cffi's default parameters (RFC 9106's low-memory
recommendation). API tokens are random URL-safe strings shown once; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dermscreen.db.base import utcnow
from dermscreen.db.screening import ModelVersion
from dermscreen.db.tenancy import ApiToken, Hospital, Role, User

TOKEN_PREFIX = "ds_"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_hospital(session: Session, name: str, alert_threshold: float | None = None,
                    webhook_url: str | None = None, version: ModelVersion | None = None) -> Hospital:
    """A new hospital; its ``alert_threshold``, if any, holds for model ``version`` only."""
    hospital = Hospital(name=name, webhook_url=webhook_url)
    set_alert_threshold(hospital, alert_threshold, version)
    session.add(hospital)
    session.flush()
    return hospital


def set_alert_threshold(hospital: Hospital, threshold: float | None,
                        version: ModelVersion | None) -> None:
    """The hospital's own alert threshold for model ``version`` (None: the model's own)."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"alert threshold must lie in [0, 1], got {threshold}")
    if threshold is not None and version is None:
        raise ValueError("an alert threshold is set for a model version; none was given")
    hospital.alert_threshold = threshold
    hospital.alert_threshold_version_id = version.id if threshold is not None else None


def find_hospital(session: Session, key: str | int) -> Hospital | None:
    """A hospital by id (digits) or by name."""
    if str(key).isdigit():
        return session.get(Hospital, int(key))
    return session.scalar(select(Hospital).where(Hospital.name == str(key)))


def create_user(session: Session, email: str, role: Role | str, hospital: Hospital | None = None,
                password: str | None = None, name: str = "") -> User:
    """A user of ``hospital``; admins may belong to none, everyone else must belong to one."""
    role = Role(role)
    if hospital is None and role is not Role.ADMIN:
        raise ValueError(f"a {role.value} must belong to a hospital")
    user = User(
        email=email.strip().lower(),
        role=role,
        hospital_id=hospital.id if hospital is not None else None,
        password_hash=hash_password(password) if password else None,
        name=name,
    )
    session.add(user)
    session.flush()
    return user


def _token_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def issue_token(session: Session, hospital: Hospital, name: str = "",
                user: User | None = None) -> tuple[ApiToken, str]:
    """A new API token for ``hospital``: returns the row and the plaintext (shown once)."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        hospital_id=hospital.id,
        user_id=user.id if user is not None else None,
        name=name,
        prefix=plaintext[:10],
        token_hash=_token_hash(plaintext),
    )
    session.add(token)
    session.flush()
    return token, plaintext


def authenticate_token(session: Session, plaintext: str) -> ApiToken | None:
    """The live token whose plaintext this is (and mark it used), or None."""
    if not plaintext:
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(plaintext)))
    if token is None or token.revoked_at is not None:
        return None
    token.last_used_at = utcnow()
    return token


def revoke_token(session: Session, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
