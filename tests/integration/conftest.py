"""Real services for the integration tests: Redis (a dedicated database number), a throwaway
PostgreSQL database, `dermscreen worker` (Celery) subprocesses, the Flask app over real HTTP, an
SMTP server and a webhook receiver. Every wait is bounded; every subprocess dies in teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from dermscreen.config import Config
from dermscreen.db.session import session_factory
from tests.conftest import REDIS_SERVER as REDIS, throwaway_postgres
from tests.worker.receivers import SmtpReceiver, WebhookReceiver

DERMSCREEN = str(Path(sys.executable).with_name("dermscreen"))
ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def redis_database(number: int) -> str:
    """An emptied Redis database; fails (does not skip) when Redis is unreachable."""
    import redis

    client = redis.Redis.from_url(f"{REDIS}/{number}", socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis on {REDIS} is unreachable: {error}")
    return f"{REDIS}/{number}"


def queue_depth(broker_url: str) -> int:
    """Messages waiting (in every priority's list) or unacknowledged in the broker (all queues)."""
    import redis

    from dermscreen.metrics import queue_depth as depth
    from dermscreen.worker.queues import ALL

    client = redis.Redis.from_url(broker_url)
    return sum(sum(depth(client, queue)) for queue in ALL)


@pytest.fixture(scope="module")
def postgres_url():
    with throwaway_postgres("dermscreen_it") as url:
        yield url


@pytest.fixture(scope="module")
def smtp():
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def webhook():
    with WebhookReceiver() as receiver:
        yield receiver


def service_config(root: Path, postgres_url: str, broker_url: str, bundle: Path, smtp_url: str,
                   **overrides) -> Config:
    """Distributed settings: PostgreSQL, Redis, a shared image store, limits small enough for
    synthetic bombs, one image per chunk. The time limit leaves room for a cold worker's first
    chunk (TensorFlow import and model load) on a busy machine."""
    settings = dict(home=root / "home", database_url=postgres_url, broker_url=broker_url,
                    model_bundle=str(bundle), store_dir=str(root / "store"), smtp_url=smtp_url,
                    max_image_pixels=1_000_000, chunk_size=1, task_time_limit=60,
                    visibility_timeout=75, notify_backoff_seconds=1)
    settings.update(overrides)
    return Config(**settings)


def config_env(config: Config) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DERMSCREEN_")}
    env.update({f"DERMSCREEN_{name.upper()}": str(value) for name, value in asdict(config).items()})
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


class Workers:
    """`dermscreen worker` subprocesses, each in its own process group, logs under ``logs``."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, config: Config, queues: str, concurrency: int = 1,
              beat: bool = False, chunk_delay: float = 0.0):
        """Start ``dermscreen worker``; with ``chunk_delay``, each inference chunk holds its
        images that many seconds before scoring them and lists them in ``held(name)`` (see
        tests/integration/slow_worker.py)."""
        env = config_env(config)
        command = [DERMSCREEN]
        if chunk_delay:
            command = [sys.executable, "-m", "tests.integration.slow_worker", str(chunk_delay),
                       str(self.logs / f"{name}.held")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = open(self.logs / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(
            command + ["worker", "--queues", queues, "--concurrency", str(concurrency),
                       "--hostname", f"{name}@%h", "--loglevel", "info"]
            + (["--beat"] if beat else []),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self.processes[name]

    def kill(self, name: str, sig=signal.SIGKILL) -> int:
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait(timeout=10)

    def held(self, name: str) -> list[list[str]]:
        """The image ids of each chunk a slow worker (``chunk_delay``) has taken."""
        path = self.logs / f"{name}.held"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def ready(self, name: str) -> bool:
        return " ready." in (self.logs / f"{name}.log").read_text(errors="replace")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    pool = Workers(tmp_path_factory.mktemp("worker-logs"))
    yield pool
    pool.stop_all()


class HttpApp:
    """The Flask app on a real port (werkzeug's server in a thread)."""

    def __init__(self, config: Config):
        from werkzeug.serving import make_server

        from dermscreen.web import create_app

        self.server = make_server("127.0.0.1", 0, create_app(config), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture(scope="module")
def module_sessions(postgres_url):
    return session_factory(postgres_url)
