"""``dermscreen serve`` (the web app, with an embedded worker by default) and ``dermscreen admin``.

    dermscreen serve --host 0.0.0.0 --port 5000
    dermscreen admin create-hospital "St. Elsewhere" --alert-threshold 0.4
    dermscreen admin create-user derm@elsewhere.org --role dermatologist --hospital "St. Elsewhere"
    dermscreen admin issue-token --hospital "St. Elsewhere" --name "PACS export"
    dermscreen admin revoke-token 3
    dermscreen admin list tokens

Production runs the same app under gunicorn: ``gunicorn 'dermscreen.web:create_app()'``.
"""

from __future__ import annotations

import click
from sqlalchemy import select

from dermscreen import accounts, registry
from dermscreen.config import Config
from dermscreen.db.session import session_factory
from dermscreen.db.tenancy import ApiToken, Hospital, Role, User


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host, port):
    """Migrate the database, then serve the web app (and, embedded, a background worker)."""
    from werkzeug.serving import run_simple

    from dermscreen.db.migrate import upgrade
    from dermscreen.web import create_app

    config = Config.from_env()
    config.home.mkdir(parents=True, exist_ok=True)
    upgrade(config.database_url)
    if config.embedded:
        from dermscreen.worker.embedded import start_background_worker

        start_background_worker(config)
    click.echo(f"dermscreen serving on http://{host}:{port} (database {config.database_url})")
    run_simple(host, port, create_app(config), threaded=True)


@click.group()
def admin():
    """Hospitals, users and API tokens of the configured database."""


def _sessions():
    return session_factory(Config.from_env().database_url)


def _hospital(session, key) -> Hospital:
    hospital = accounts.find_hospital(session, key)
    if hospital is None:
        raise click.BadParameter(f"no hospital {key!r}", param_hint="--hospital")
    return hospital


@admin.command("create-hospital")
@click.argument("name")
@click.option("--alert-threshold", type=click.FloatRange(0, 1), default=None,
              help="Melanoma probability that alerts, for the active model version (default: "
                   "the model bundle's threshold).")
@click.option("--webhook-url", default=None, help="Where the hospital's alerts are POSTed.")
def create_hospital(name, alert_threshold, webhook_url):
    """Add a hospital (a tenant)."""
    with _sessions().begin() as session:
        version = (None if alert_threshold is None
                   else registry.active_version(session, Config.from_env()))
        hospital = accounts.create_hospital(session, name, alert_threshold, webhook_url, version)
        click.echo(f"hospital {hospital.id}: {hospital.name}")


@admin.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice([role.value for role in Role]), required=True)
@click.option("--hospital", "hospital_key", help="Hospital id or name (all but admins).")
@click.option("--name", default="")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="DERMSCREEN_NEW_USER_PASSWORD", help="Prompted for when not given.")
def create_user(email, role, hospital_key, name, password):
    """Add a user who signs in with EMAIL and a password."""
    with _sessions().begin() as session:
        hospital = _hospital(session, hospital_key) if hospital_key else None
        try:
            user = accounts.create_user(session, email, role, hospital, password, name)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        click.echo(f"user {user.id}: {user.email} ({user.role.value})")


@admin.command("issue-token")
@click.option("--hospital", "hospital_key", required=True, help="Hospital id or name.")
@click.option("--name", default="", help="What the token is for.")
@click.option("--user", "user_email", default=None, help="Email of the user it acts for.")
def issue_token(hospital_key, name, user_email):
    """Issue an API token; it is printed once and cannot be shown again."""
    with _sessions().begin() as session:
        hospital = _hospital(session, hospital_key)
        user = None
        if user_email:
            user = session.scalar(select(User).where(User.email == user_email.strip().lower()))
            if user is None or user.hospital_id != hospital.id:
                raise click.BadParameter(f"no user {user_email} at {hospital.name}",
                                         param_hint="--user")
        token, plaintext = accounts.issue_token(session, hospital, name, user)
        click.echo(f"token {token.id} for {hospital.name} (shown once, keep it secret):",
                   err=True)
        click.echo(plaintext)


@admin.command("revoke-token")
@click.argument("token_id", type=int)
def revoke_token(token_id):
    """Revoke the API token with this id (see ``admin list tokens``)."""
    with _sessions().begin() as session:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise click.BadParameter(f"no token {token_id}", param_hint="TOKEN_ID")
        accounts.revoke_token(session, token)
        click.echo(f"token {token.id} ({token.prefix}...) revoked")


LISTINGS = {
    "hospitals": (Hospital, ["id", "name", "alert_threshold", "webhook_url"]),
    "users": (User, ["id", "email", "role", "hospital_id", "active"]),
    "tokens": (ApiToken, ["id", "hospital_id", "name", "prefix", "last_used_at", "revoked_at"]),
}


@admin.command("list")
@click.argument("what", type=click.Choice(sorted(LISTINGS)))
def list_(what):
    """List hospitals, users or tokens (never a token itself, only its prefix)."""
    model, columns = LISTINGS[what]
    with _sessions()() as session:
        rows = [[_cell(getattr(row, column)) for column in columns]
                for row in session.scalars(select(model).order_by(model.id))]
    widths = [max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(columns)]
    for line in [columns, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(value) -> str:
    if value is None:
        return "-"
    return str(getattr(value, "value", value))
