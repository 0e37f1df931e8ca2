"""Alembic environment: migrates the database named by the config (or ``-x url=...``)."""

from alembic import context

from dermscreen.config import Config
from dermscreen.db import Base
from dermscreen.db.session import engine_for

config = context.config
url = context.get_x_argument(as_dictionary=True).get("url") or config.attributes.get("url")
url = url or Config.from_env().database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with engine_for(url).connect() as connection:
        # SQLite alters a table by copying it and dropping the old one, which its foreign keys
        # refuse while other tables' rows point at it: they are off while migrations run.
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _foreign_keys(connection, "OFF")
        try:
            context.configure(connection=connection, target_metadata=Base.metadata,
                              render_as_batch=True, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if sqlite:
                _foreign_keys(connection, "ON")


def _foreign_keys(connection, state: str) -> None:
    """Switch SQLite's foreign keys (effective only outside a transaction)."""
    connection.exec_driver_sql(f"PRAGMA foreign_keys={state}")
    connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
