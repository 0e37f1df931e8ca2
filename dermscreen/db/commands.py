"""``dermscreen db upgrade`` / ``dermscreen db check``: schema migrations for the configured database."""

import click

from dermscreen.config import Config
from dermscreen.db import migrate


@click.group()
def db():
    """Database schema migrations (Alembic)."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision):
    """Migrate the configured database (DERMSCREEN_DATABASE_URL) to REVISION."""
    config = Config.from_env()
    config.home.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(config.database_url, revision)
    click.echo(f"database at {revision}")


@db.command()
def check():
    """Fail when the models and the migrations disagree."""
    migrate.check(Config.from_env().database_url)
    click.echo("models and migrations agree")
