"""Dermatologists' decisions on cases."""

from __future__ import annotations

import enum
from typing import Optional

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dermscreen.db.base import Base, created, intpk, str_enum


class Decision(str, enum.Enum):
    MELANOMA = "melanoma"
    NOT_MELANOMA = "not_melanoma"
    NEEDS_BIOPSY = "needs_biopsy"
    OTHER = "other"  # another diagnosis, named in ``diagnosis``


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[intpk]
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[Decision] = mapped_column(str_enum(Decision))
    diagnosis: Mapped[Optional[str]] = mapped_column(String(100))
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[created]
