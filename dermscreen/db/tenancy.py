"""Hospitals (tenants), their users and API tokens."""

from __future__ import annotations

import enum
from typing import Optional

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dermscreen.db.base import Base, created, intpk, str_enum, timestamp


class Role(str, enum.Enum):
    SUBMITTER = "submitter"
    DERMATOLOGIST = "dermatologist"
    ADMIN = "admin"


class Hospital(Base):
    __tablename__ = "hospitals"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Melanoma probability at or above which a prediction alerts; None: the bundle's threshold.
    # A probability means something only for the model it was chosen for, so the threshold holds
    # for that model version alone; every other version alerts at its own calibrated threshold.
    alert_threshold: Mapped[Optional[float]]
    alert_threshold_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.id"))
    # Where the hospital's webhook alerts go; None: no webhook.
    webhook_url: Mapped[Optional[str]] = mapped_column(String(500))
    created_at: Mapped[created]

    users: Mapped[list["User"]] = relationship(back_populates="hospital")


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    hospital_id: Mapped[Optional[int]] = mapped_column(ForeignKey("hospitals.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(str_enum(Role))
    password_hash: Mapped[Optional[str]] = mapped_column(String(255))
    # Dermatologists get alerts by email unless they opt out.
    notify_email: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[created]

    hospital: Mapped[Optional[Hospital]] = relationship(back_populates="users")


class ApiToken(Base):
    """A hospital's API token. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created]
    last_used_at: Mapped[Optional[timestamp]]
    revoked_at: Mapped[Optional[timestamp]]

    hospital: Mapped[Hospital] = relationship()
