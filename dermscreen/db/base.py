"""Declarative base, naming convention and the column types every model shares."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Annotated

from sqlalchemy import JSON, DateTime, Enum, MetaData, String
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_uid() -> str:
    return uuid.uuid4().hex


intpk = Annotated[int, mapped_column(primary_key=True)]
uidpk = Annotated[str, mapped_column(String(32), primary_key=True, default=new_uid)]
created = Annotated[datetime, mapped_column(DateTime(timezone=True), default=utcnow)]
timestamp = Annotated[datetime, mapped_column(DateTime(timezone=True))]


def str_enum(enum_class: type[enum.Enum]) -> Enum:
    """Store an enum by value as a short string with a CHECK constraint (same on SQLite and PG)."""
    return Enum(
        enum_class,
        native_enum=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
        create_constraint=True,
        name=enum_class.__name__.lower(),
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict: JSON, list: JSON}

    def __repr__(self) -> str:
        key = getattr(self, "id", None)
        return f"<{type(self).__name__} {key}>"
