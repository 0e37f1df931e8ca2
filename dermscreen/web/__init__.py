"""The Flask front end: hospital API (/api/v1), dermatologist pages, admin pages.

    app = create_app()            # settings from DERMSCREEN_* environment variables
    app = create_app(Config(...)) # tests
"""

from __future__ import annotations

from flask import Flask

from dermscreen.config import Config
from dermscreen.measured import fmt
from dermscreen.web.extensions import csrf, database, login_manager


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config.update(
        DERMSCREEN=config,
        SECRET_KEY=config.secret_key,
        MAX_CONTENT_LENGTH=config.max_upload_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.public_url.startswith("https://"),
    )
    database.init_app(app, config.database_url)
    login_manager.init_app(app)
    csrf.init_app(app)
    app.add_template_filter(fmt, "measured")  # a metric with its 95% interval, as model cards write it

    from dermscreen.web import admin, api, auth, metrics, pages
    from dermscreen.web.api import errors as api_errors

    api_errors.init_app(app)  # JSON errors for /api/ URLs that match no route
    csrf.exempt(api.bp)  # token-authenticated, no cookies
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(admin.bp, url_prefix="/admin")
    metrics.init_app(app)  # GET /metrics, and the request counters
    return app
