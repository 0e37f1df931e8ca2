"""The PostgreSQL + Redis deployment that the drills break, run on this machine as an operator would:
its own ``redis-server`` (AOF on, as in docker-compose.yml), a throwaway PostgreSQL database (or a
throwaway PostgreSQL cluster the drill may restart), the web app under gunicorn, ``dermscreen
worker`` processes (one for ingest and notify that also runs the reconciler's beat, and
inference workers), and an optional SMTP server process (aiosmtpd). Every process is started
here, in its own process group, and ended here.

    with Cluster(work, options) as cluster:
        batch = cluster.submit(paths)            # one zip over HTTP; its batch id
        cluster.wait_done([batch], timeout)
        print(audit(cluster.sessions, [batch]))  # lost / doubled counts from the database
"""

from __future__ import annotations

import mailbox
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import requests

from benchmarks.pipeline_throughput import (SHARED_IMAGES, pick_images as first_images,
                                           postgres_database, zip_of)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_PORT = 6390


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


def pick_images(count: int, work: Path) -> list[Path]:
    """``count`` dermoscopic JPEGs of ../shared/data/extra (when there), else generated lesions."""
    return first_images(SHARED_IMAGES, count, work)


class Process:
    """A server or worker subprocess in its own process group, its output in ``log``."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict | None = None):
        self.name, self.command, self.log_path, self.env = name, command, log, env
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Process":
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(["nice", "-n", "19"] + self.command, env=self.env,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        return self

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the whole group (a worker's pool children too) and reap it."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(30)

    def stop(self, timeout: float = 30) -> None:
        self.signal(signal.SIGTERM)
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RedisServer:
    """``redis-server`` on ``port`` with the AOF persistence of docker-compose.yml."""

    def __init__(self, work: Path, port: int = REDIS_PORT):
        self.port, self.dir = port, work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = Process("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                         "--dir", str(self.dir), "--appendonly", "yes",
                                         "--appendfsync", "everysec", "--save", ""],
                               work / "redis.log")
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        import redis

        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"something already listens on {self.port}")
        self.process.start()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers():
            try:
                return client.ping()
            except redis.RedisError:
                return False

        wait_until(answers, 30, "redis-server to answer")


def throwaway_database(server_url: str = POSTGRES_SERVER):
    """A migrated database on the server of ``server_url``, dropped afterwards
    (``pipeline_throughput.postgres_database``)."""
    return postgres_database(server_url, prefix="drill")


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb under ``work``, run as the ``postgres`` user when
    this runs as root) on ``port``, which a drill may stop and start."""

    def __init__(self, work: Path, port: int = 5440):
        self.port, self.data = port, work / "pgdata"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.log = work / "postgres.log"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + ["nice", "-n", "19"] + list(command), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd="/tmp")

    def init(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data.parent, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o",
                  f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


class Cluster:
    """The deployment: web (gunicorn), a CPU worker (ingest, notify, beat) and ``inference``
    inference workers, on ``redis`` and ``database``."""

    def __init__(self, work: Path, database_url: str, broker_url: str, inference: int = 2,
                 smtp_url: str = "", web_workers: int = 2, **settings):
        from dermscreen.config import DEFAULT_BUNDLE, Config

        self.work = work
        # The inference workers share the cores out, as `dermscreen worker` does for its pool.
        settings.setdefault("inference_threads", max(1, (os.cpu_count() or 1) // inference))
        self.config = Config(home=work / "home", database_url=database_url, broker_url=broker_url,
                             model_bundle=str(DEFAULT_BUNDLE), store_dir=str(work / "store"),
                             smtp_url=smtp_url, **settings)
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("DERMSCREEN_")}
        self.env.update({f"DERMSCREEN_{k.upper()}": str(v) for k, v in asdict(self.config).items()})
        self.env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                               self.env.get("PYTHONPATH")]))
        self.workers: dict[str, Process] = {}
        self.starts: Counter = Counter()
        specs = [("cpu", "ingest,notify", True)] + [(f"inference{i}", "inference", False)
                                                   for i in range(inference)]
        for name, queue_names, beat in specs:
            self.workers[name] = Process(
                name, [str(BIN / "dermscreen"), "worker", "--queues", queue_names,
                       "--concurrency", "1", "--hostname", f"{name}@%h", "--loglevel", "info"]
                + (["--beat"] if beat else []), work / f"{name}.log", self.env)
        port = free_port()
        self.web = Process("web", [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}",
                                   "--workers", str(web_workers), "--threads", "4",
                                   "--timeout", "120", "dermscreen.web:create_app()"],
                           work / "web.log", self.env)
        self.api = f"http://127.0.0.1:{port}/api/v1"
        self.token = ""
        self.hospital_id = 0
        self.sessions = None

    def __enter__(self) -> "Cluster":
        from dermscreen import accounts
        from dermscreen.db.session import session_factory
        from dermscreen.db.tenancy import Role
        from dermscreen.registry import register_bundle

        self.config.home.mkdir(parents=True, exist_ok=True)
        self.sessions = session_factory(self.config.database_url)
        with self.sessions.begin() as session:
            register_bundle(session, self.config.model_bundle)
            hospital = accounts.create_hospital(session, "Drill hospital")
            for index in (1, 2):
                accounts.create_user(session, f"derm{index}@drill.example.org",
                                     Role.DERMATOLOGIST, hospital=hospital)
            _, self.token = accounts.issue_token(session, hospital, name="drill")
            self.hospital_id = hospital.id
        self.web.start()
        for name in self.workers:
            self.start(name)
        wait_until(lambda: all(self.ready(name) for name in self.workers), 600,
                   "the workers to start")
        wait_until(self._web_answers, 120, "gunicorn to answer")
        return self

    def __exit__(self, *_) -> None:
        self.web.stop()
        for process in self.workers.values():
            process.stop()
        from dermscreen.db.session import engine_for

        engine_for(self.config.database_url).dispose()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def _web_answers(self) -> bool:
        try:
            return requests.get(f"{self.api}/batches?limit=1", headers=self.headers,
                                timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def start(self, name: str) -> None:
        self.workers[name].start()
        self.starts[name] += 1

    def ready(self, name: str) -> bool:
        """Celery logged `ready.` once per start of the worker."""
        return self.workers[name].text().count(" ready.") >= self.starts[name]

    def warm(self, paths: list[Path]) -> None:
        """Each inference worker loads the model on its first chunk: do that before the clock."""
        inference = [name for name in self.workers if name.startswith("inference")]
        batch = self.submit(paths[:len(inference) * self.config.chunk_size], name="warm.zip")
        self.wait_done([batch], 900)

    def post_paths(self, paths: list[Path], name: str = "batch.zip",
                   timeout: float = 120) -> requests.Response:
        return requests.post(f"{self.api}/batches", headers=self.headers, timeout=timeout,
                             files=[("files", (name, zip_of(paths), "application/zip"))])

    def submit(self, paths: list[Path], name: str = "batch.zip", timeout: float = 120) -> str:
        response = self.post_paths(paths, name, timeout)
        response.raise_for_status()
        return response.json()["id"]

    def unfinished(self, batch_ids: list[str]) -> int:
        """Images of these batches not yet done, failed or unassessable (read from the
        database), and one more for each batch still being ingested."""
        from sqlalchemy import func, select

        from dermscreen.db.screening import Batch, BatchStatus, Image, ImageStatus

        with self.sessions() as session:
            waiting = session.scalar(select(func.count()).select_from(Image).where(
                Image.batch_id.in_(batch_ids),
                Image.status.in_([ImageStatus.RECEIVED, ImageStatus.QUEUED])))
            ingesting = session.scalar(select(func.count()).select_from(Batch).where(
                Batch.id.in_(batch_ids), Batch.ingested_at.is_(None),
                Batch.status != BatchStatus.FAILED))
        return waiting + ingesting

    def finished(self, batch_ids: list[str]) -> int:
        """Images of these batches done, failed or unassessable."""
        from sqlalchemy import func, select

        from dermscreen.db.screening import Image, ImageStatus

        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Image).where(
                Image.batch_id.in_(batch_ids),
                Image.status.in_([ImageStatus.DONE, ImageStatus.FAILED,
                                  ImageStatus.UNASSESSABLE])))

    def queued(self, batch_ids: list[str]) -> int:
        """Images of these batches queued for inference (ingested, not yet scored)."""
        from sqlalchemy import func, select

        from dermscreen.db.screening import Image, ImageStatus

        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Image).where(
                Image.batch_id.in_(batch_ids), Image.status == ImageStatus.QUEUED))

    def first_scored_after(self, batch_ids: list[str], since) -> float | None:
        """Seconds from ``since`` (UTC) to the first prediction of these batches written after
        it: when scoring resumed."""
        from sqlalchemy import func, select

        from dermscreen.db.screening import Image, Prediction

        with self.sessions() as session:
            first = session.scalar(select(func.min(Prediction.created_at))
                                   .join(Image, Image.id == Prediction.image_id)
                                   .where(Image.batch_id.in_(batch_ids),
                                          Prediction.created_at > since))
        return None if first is None else round((first - since).total_seconds(), 1)

    def wait_done(self, batch_ids: list[str], timeout: float) -> float:
        """Seconds until every image of the batches is out of the queue."""
        start = time.monotonic()

        def done():
            try:
                return self.unfinished(batch_ids) == 0
            except Exception:  # the database is down in a drill: ask again
                return False

        wait_until(done, timeout, f"batches {batch_ids} to finish", interval=0.5)
        return time.monotonic() - start


def audit(sessions, batch_ids: list[str], submitted: int) -> dict:
    """What came out of the batches: images by status, and the lost and doubled counts."""
    from sqlalchemy import func, select

    from dermscreen.db.alerts import Alert, Delivery
    from dermscreen.db.screening import Image, Prediction

    with sessions() as session:
        statuses = Counter(status.value for status in session.scalars(
            select(Image.status).where(Image.batch_id.in_(batch_ids))))
        per_image = session.execute(
            select(Prediction.image_id, func.count()).join(Image, Image.id == Prediction.image_id)
            .where(Image.batch_id.in_(batch_ids)).group_by(Prediction.image_id)).all()
        alerts = session.execute(
            select(Alert.image_id, func.count()).join(Image, Image.id == Alert.image_id)
            .where(Image.batch_id.in_(batch_ids)).group_by(Alert.image_id)).all()
        deliveries = Counter(status.value for status in session.scalars(
            select(Delivery.status).join(Alert).join(Image, Image.id == Alert.image_id)
            .where(Image.batch_id.in_(batch_ids))))
    finished = statuses["done"] + statuses["failed"] + statuses["unassessable"]
    return {"submitted": submitted, "images": sum(statuses.values()), "statuses": dict(statuses),
            "lost": submitted - finished,
            "doubled predictions": sum(count - 1 for _, count in per_image if count > 1),
            "images done without a prediction": statuses["done"] - len(per_image),
            "alerts": len(alerts), "doubled alerts": sum(count - 1 for _, count in alerts
                                                          if count > 1),
            "deliveries": dict(deliveries)}


def maildir_message_ids(path: Path) -> Counter:
    """Message-IDs of the mails aiosmtpd's Mailbox handler stored in the Maildir ``path``."""
    if not path.exists():
        return Counter()
    return Counter(message["Message-ID"] for message in mailbox.Maildir(path, create=False))


def new_work(prefix: str) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"dermscreen-{prefix}-{uuid.uuid4().hex[:6]}-"))


@contextmanager
def deployment(prefix: str, redis_port: int = REDIS_PORT, postgres_server: str = POSTGRES_SERVER,
               work: Path | None = None, **settings):
    """This drill's redis-server, a throwaway database on ``postgres_server`` and the cluster on
    them; yields (cluster, redis). The work folder (logs) is kept when the drill fails, and when
    the caller gave it."""
    import click

    owned = work is None
    work = work or new_work(prefix)
    redis = RedisServer(work, redis_port)
    redis.start()
    try:
        with throwaway_database(postgres_server) as database, \
                Cluster(work, database, redis.url, **settings) as cluster:
            yield cluster, redis
    except BaseException:
        click.echo(f"failed; logs kept in {work}", err=True)
        raise
    else:
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        redis.process.kill()


def queued_messages(redis_url: str) -> dict:
    """Messages waiting in each queue (in every priority's list) and taken but not acknowledged
    (kombu's ``unacked``)."""
    import redis

    from dermscreen.metrics import queue_depth
    from dermscreen.worker.queues import ALL

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    counts = {queue: queue_depth(client, queue)[0] for queue in ALL}
    counts["unacked"] = client.hlen("unacked")
    return counts
