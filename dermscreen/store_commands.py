"""``dermscreen store init``: make the configured image store's directory or bucket."""

import click

from dermscreen.config import Config
from dermscreen.storage import store_for


@click.group()
def store():
    """The image store (a directory, or an S3 bucket with DERMSCREEN_STORE_URL)."""


@store.command()
def init():
    """Create the store's directory or bucket when it is missing (safe to run again)."""
    click.echo(f"store ready: {store_for(Config.from_env()).create()}")
