"""Run Alembic migrations from code: ``upgrade(url)`` brings a database to the latest schema."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig

from dermscreen.config import PACKAGE_DIR


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig(str(PACKAGE_DIR / "db" / "alembic.ini"))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrations disagree (``alembic check``)."""
    command.check(alembic_config(url))
