"""The audit log: who saw or changed what, and when."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from dermscreen.db.base import Base, created, intpk


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[intpk]
    at: Mapped[created]
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)
    token_id: Mapped[Optional[int]] = mapped_column(ForeignKey("api_tokens.id"))
    hospital_id: Mapped[Optional[int]] = mapped_column(ForeignKey("hospitals.id"), index=True)
    action: Mapped[str] = mapped_column(String(64))  # "view", "review", "acknowledge", ...
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[Optional[dict]]


def record(session: Session, action: str, obj, *, user_id=None, token_id=None,
           hospital_id=None, **detail) -> AuditEntry:
    """Add an audit entry for ``action`` on ``obj`` to the caller's transaction."""
    entry = AuditEntry(
        action=action,
        object_type=type(obj).__name__,
        object_id=str(obj.id),
        user_id=user_id,
        token_id=token_id,
        hospital_id=hospital_id if hospital_id is not None else getattr(obj, "hospital_id", None),
        detail=detail or None,
    )
    session.add(entry)
    return entry
