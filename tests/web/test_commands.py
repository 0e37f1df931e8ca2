"""``dermscreen admin ...``, ``dermscreen serve`` and the app under gunicorn."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from dermscreen import accounts
from dermscreen.cli import main
from dermscreen.db import ApiToken, Hospital, Role, User
from tests.conftest import REDIS_SERVER


@pytest.fixture
def run(config, monkeypatch):
    """Invoke ``dermscreen ARGS`` against the test database."""
    monkeypatch.setenv("DERMSCREEN_HOME", str(config.home))
    monkeypatch.setenv("DERMSCREEN_DATABASE_URL", config.database_url)

    def invoke(*args, input=None):
        result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
        return result

    return invoke


def test_admin_creates_hospital_user_and_token_then_revokes_it(run, sessions):
    result = run("admin", "create-hospital", "St. Elsewhere", "--alert-threshold", "0.4")
    assert result.exit_code == 0, result.output
    result = run("admin", "create-user", "Derm@Elsewhere.org", "--role", "dermatologist",
                 "--hospital", "St. Elsewhere", "--name", "Dr Derm", input="pw-1234\npw-1234\n")
    assert result.exit_code == 0, result.output
    result = run("admin", "issue-token", "--hospital", "St. Elsewhere", "--name", "pacs",
                 "--user", "derm@elsewhere.org")
    assert result.exit_code == 0, result.output
    plaintext = result.stdout.strip().splitlines()[-1]

    with sessions.begin() as session:
        hospital = session.scalars(select(Hospital)).one()
        assert (hospital.name, hospital.alert_threshold) == ("St. Elsewhere", 0.4)
        user = session.scalars(select(User)).one()
        assert user.role is Role.DERMATOLOGIST and user.hospital_id == hospital.id
        assert accounts.verify_password(user.password_hash, "pw-1234")
        token = accounts.authenticate_token(session, plaintext)
        assert token is not None and token.user_id == user.id

    listing = run("admin", "list", "tokens").output
    assert token.prefix in listing and plaintext not in listing
    assert run("admin", "revoke-token", str(token.id)).exit_code == 0
    with sessions() as session:
        assert accounts.authenticate_token(session, plaintext) is None
        assert session.get(ApiToken, token.id).revoked_at is not None


def test_admin_refuses_what_makes_no_sense(run):
    assert run("admin", "create-hospital", "H", "--alert-threshold", "1.5").exit_code == 2
    assert run("admin", "issue-token", "--hospital", "nowhere").exit_code == 2
    result = run("admin", "create-user", "x@example.org", "--role", "submitter",
                 "--password", "pw")
    assert result.exit_code == 2 and "must belong to a hospital" in result.output
    assert run("admin", "revoke-token", "999").exit_code == 2


def test_admin_list_prints_tables(run):
    run("admin", "create-hospital", "Alpha")
    run("admin", "create-hospital", "Beta")
    lines = run("admin", "list", "hospitals").output.splitlines()
    assert lines[0].split() == ["id", "name", "alert_threshold", "webhook_url"]
    assert [line.split()[1] for line in lines[1:]] == ["Alpha", "Beta"]
    assert run("admin", "list", "users").output.split() == ["id", "email", "role",
                                                          "hospital_id", "active"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process, seconds: float = 60) -> requests.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()}")
        try:
            return requests.get(url, timeout=10)
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still loading
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds}s")


@pytest.fixture
def server(tmp_path):
    """Start a server command with a fresh, unmigrated SQLite database; stop it afterwards."""
    started = []

    def start(command, **env):
        environment = os.environ | {"DERMSCREEN_HOME": str(tmp_path / "home"),
                                    "DERMSCREEN_DATABASE_URL": f"sqlite:///{tmp_path}/web.db"}
        environment.update(env)
        process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=20)


def test_serve_migrates_the_database_and_answers(server, tmp_path):
    port = free_port()
    # a Redis broker URL selects distributed mode: serve starts no embedded worker here
    dermscreen = str(Path(sys.executable).parent / "dermscreen")
    process = server([dermscreen, "serve", "--port", str(port)],
                     DERMSCREEN_BROKER_URL=f"{REDIS_SERVER}/15")
    response = wait_for(f"http://127.0.0.1:{port}/api/v1/openapi.json", process)
    assert response.status_code == 200 and response.json()["openapi"].startswith("3.")
    assert requests.get(f"http://127.0.0.1:{port}/api/v1/alerts").status_code == 401
    from dermscreen.db.migrate import check

    check(f"sqlite:///{tmp_path}/web.db")  # serve left the schema at head


def test_app_is_servable_by_gunicorn(server, tmp_path):
    from dermscreen.db.migrate import upgrade

    upgrade(f"sqlite:///{tmp_path}/web.db")
    port = free_port()
    process = server([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                      "--workers", "1", "dermscreen.web:create_app()"])
    response = wait_for(f"http://127.0.0.1:{port}/api/v1/openapi.json", process)
    assert response.status_code == 200


@pytest.mark.slow
def test_serve_embedded_scores_a_submitted_archive(server, tmp_path, tiny_bundle):
    import io
    import zipfile

    from dermscreen.db.session import session_factory
    from tests.factories import BLUE, RED, image_bytes, lesion_image

    port = free_port()
    dermscreen = str(Path(sys.executable).parent / "dermscreen")
    process = server([dermscreen, "serve", "--port", str(port)],
                     DERMSCREEN_MODEL_BUNDLE=str(tiny_bundle))
    base = f"http://127.0.0.1:{port}/api/v1"
    wait_for(f"{base}/openapi.json", process)
    with session_factory(f"sqlite:///{tmp_path}/web.db").begin() as session:
        hospital = accounts.create_hospital(session, "Embedded General")
        _, plaintext = accounts.issue_token(session, hospital)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("red.jpg", image_bytes(lesion_image(RED, size=(32, 32))))
        bundle.writestr("blue.jpg", image_bytes(lesion_image(BLUE, size=(32, 32))))
    headers = {"Authorization": f"Bearer {plaintext}"}
    response = requests.post(f"{base}/batches", headers=headers,
                             files=[("files", ("lesions.zip", archive.getvalue()))])
    assert response.status_code == 202, response.text
    batch_url = f"http://127.0.0.1:{port}{response.headers['Location']}"
    deadline = time.monotonic() + 120
    while requests.get(batch_url, headers=headers).json()["status"] != "done":
        assert time.monotonic() < deadline, "the embedded worker did not finish the batch"
        time.sleep(0.5)
    rows = requests.get(f"{batch_url}/results", headers=headers).json()["results"]
    assert [(row["image"], row["status"], row["flagged"]) for row in rows] == [
        ("lesions.zip/red.jpg", "done", True), ("lesions.zip/blue.jpg", "done", False)]
