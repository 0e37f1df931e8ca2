"""Flask extensions, created here and attached to the app in ``create_app``."""

from __future__ import annotations

from flask import Flask, g
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from sqlalchemy.orm import Session

from dermscreen.db.session import session_factory

login_manager = LoginManager()
csrf = CSRFProtect()


class Database:
    """A request-scoped SQLAlchemy session: ``database.session`` inside a request.

    Views commit explicitly; anything uncommitted is rolled back when the request ends.
    """

    def init_app(self, app: Flask, url: str) -> None:
        app.extensions["database"] = session_factory(url)
        app.teardown_appcontext(self._close)

    @property
    def session(self) -> Session:
        from flask import current_app

        if "db_session" not in g:
            g.db_session = current_app.extensions["database"]()
        return g.db_session

    @staticmethod
    def _close(_exc) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


database = Database()
