"""Fixtures shared by the service tests: databases, config, app, client and small factories.

``db_url`` runs each test that uses it twice: on a fresh SQLite file and on a throwaway
PostgreSQL database (created on 127.0.0.1:5432 as user ``postgres``, migrated once, truncated
before every test, dropped at the end). PostgreSQL runs are marked ``services``; when the server
is unreachable they fail, they are not skipped.

    pytest tests/web -q                  # both databases
    pytest tests/web -q -m "not services"  # SQLite only
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from dermscreen.config import Config
from dermscreen.db.migrate import upgrade
from dermscreen.db.session import engine_for, session_factory
from dermscreen.db.tenancy import Role
from tests.factories import make_tiny_bundle
from tests.s3server import S3Server

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
# The Redis server the tests use, without a database number (another port lets test runs coexist)
REDIS_SERVER = os.environ.get("DERMSCREEN_TEST_REDIS", "redis://127.0.0.1:6379")
# Password that ``make_user`` gives every user unless told otherwise.
TEST_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny model bundle (see tests/factories.py) as the service runs one: red images score in
    the alert tier (0.5), purple in the review tier (0.2), blue in neither; its quality gate
    stops plain, black, white and tiny images."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny", review_threshold=0.2,
                            gate=True)


@pytest.fixture(scope="session")
def s3_server():
    """The S3-compatible server (tests/s3server.py); ``s3_server.bucket()`` makes a bucket."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An SQLite database migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine_for(url).dispose()
    return path


@contextmanager
def throwaway_postgres(prefix: str, revision: str = "head"):
    """Create a PostgreSQL database on 127.0.0.1:5432, migrate it to ``revision``, yield its URL,
    drop it.

    Fails (does not skip) when the server is unreachable.
    """
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                                autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is unreachable: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{POSTGRES_SERVER}/{name}"
        try:
            upgrade(url, revision)
            yield url
        finally:
            engine_for(url).dispose()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database() -> str:
    """A throwaway PostgreSQL database, migrated to head; dropped when the session ends."""
    with throwaway_postgres("dermscreen_test") as url:
        yield url


def _truncate_all(url: str) -> None:
    with engine_for(url).begin() as connection:
        connection.execute(text("SET LOCAL lock_timeout = '10s'"))
        tables = connection.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename <> 'alembic_version'"
        )).scalars().all()
        quoted = ", ".join(f'"{table}"' for table in tables)
        connection.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db_url(request, tmp_path) -> str:
    """A migrated, empty database URL: SQLite (a fresh file) or PostgreSQL (truncated)."""
    if request.param == "sqlite":
        path = tmp_path / "dermscreen.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        yield url
        engine_for(url).dispose()
    else:
        url = request.getfixturevalue("postgres_database")
        _truncate_all(url)
        yield url
        engine_for(url).dispose()


@pytest.fixture
def config(tmp_path, db_url, tiny_bundle) -> Config:
    """Settings for one test: everything under ``tmp_path``, the tiny bundle, embedded broker."""
    return Config(
        home=tmp_path,
        database_url=db_url,
        model_bundle=str(tiny_bundle),
        secret_key="test-secret-key",
    )


@pytest.fixture
def sessions(config):
    """A sessionmaker on the test database: ``with sessions.begin() as session: ...``."""
    return session_factory(config.database_url)


@pytest.fixture
def app(config):
    from dermscreen.web import create_app

    app = create_app(config)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


_sequence = itertools.count(1)


@pytest.fixture
def make_hospital(sessions):
    """``make_hospital(name=None, alert_threshold=None, webhook_url=None) -> Hospital``."""
    from dermscreen import accounts

    def make(name: str | None = None, **kwargs):
        with sessions.begin() as session:
            return accounts.create_hospital(session, name or f"Hospital {next(_sequence)}", **kwargs)

    return make


@pytest.fixture
def make_user(sessions, make_hospital):
    """``make_user(role=Role.DERMATOLOGIST, hospital=None, email=None, password=TEST_PASSWORD)``.

    A hospital is created when none is given (except for admins, who belong to none).
    """
    from dermscreen import accounts

    def make(role: Role | str = Role.DERMATOLOGIST, hospital=None, email: str | None = None,
             password: str | None = TEST_PASSWORD, name: str = ""):
        role = Role(role)
        if hospital is None and role is not Role.ADMIN:
            hospital = make_hospital()
        with sessions.begin() as session:
            return accounts.create_user(
                session, email or f"user{next(_sequence)}@example.org", role,
                hospital=hospital, password=password, name=name,
            )

    return make


@pytest.fixture
def make_token(sessions, make_hospital):
    """``make_token(hospital=None, user=None, name="") -> (ApiToken, plaintext)``."""
    from dermscreen import accounts

    def make(hospital=None, user=None, name: str = ""):
        hospital = hospital or make_hospital()
        with sessions.begin() as session:
            return accounts.issue_token(session, hospital, name=name or f"token {next(_sequence)}",
                                        user=user)

    return make


@pytest.fixture
def make_scored_batch(sessions, make_hospital):
    """``make_scored_batch(hospital=None, scores={"a.jpg": 0.9, "b.jpg": None}, threshold=0.5,
    review_threshold=None)``.

    Inserts a finished batch as the worker would leave it: one image per name, a prediction of
    the active model version for each score (None: a failed image, no prediction) in its tier
    (no review tier when ``review_threshold`` is None), and a pending alert for each flagged one.
    Returns a SimpleNamespace(batch, images, predictions, alerts).
    """
    from dermscreen.db import (Alert, Batch, BatchStatus, Image, ImageStatus, ModelVersion,
                               Prediction)
    from dermscreen.tiers import ALERT, tier
    from tests.factories import CLASSES

    def make(hospital=None, scores: dict | None = None, threshold: float = 0.5,
             review_threshold: float | None = None):
        review = threshold if review_threshold is None else review_threshold
        hospital = hospital or make_hospital()
        scores = scores if scores is not None else {"red.jpg": 0.9, "blue.jpg": 0.1}
        with sessions.begin() as session:
            version = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
            if version is None:
                version = ModelVersion(version=f"test-{next(_sequence)}", path="/nowhere",
                                       classes=CLASSES, alert_threshold=threshold, card={},
                                       active=True)
                session.add(version)
            batch = Batch(hospital_id=hospital.id, status=BatchStatus.DONE, upload_dir="/nowhere")
            session.add(batch)
            session.flush()
            made = SimpleNamespace(batch=batch, images=[], predictions=[], alerts=[])
            for name, score in scores.items():
                image = Image(batch_id=batch.id, hospital_id=hospital.id, original_name=name,
                              status=ImageStatus.FAILED if score is None else ImageStatus.DONE,
                              error="not a recognised image file" if score is None else None)
                session.add(image)
                session.flush()
                made.images.append(image)
                if score is None:
                    batch.failed_images += 1
                    continue
                rest = (1 - score) / (len(CLASSES) - 1)
                probabilities = {name: (score if name == "melanoma" else rest) for name in CLASSES}
                level = tier(score, threshold, review)
                prediction = Prediction(
                    image_id=image.id, model_version_id=version.id, probabilities=probabilities,
                    melanoma_probability=score,
                    diagnosis=max(probabilities, key=probabilities.get),
                    threshold=threshold, review_threshold=review, tier=level,
                    flagged=level == ALERT)
                session.add(prediction)
                session.flush()
                made.predictions.append(prediction)
                batch.done_images += 1
                if prediction.flagged:
                    batch.flagged_images += 1
                    alert = Alert(hospital_id=hospital.id, image_id=image.id,
                                  prediction_id=prediction.id,
                                  dedupe_key=f"{image.id}:{version.version}")
                    session.add(alert)
                    session.flush()
                    made.alerts.append(alert)
            batch.total_images = len(scores)
        return made

    return make
