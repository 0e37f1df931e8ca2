"""Embedded mode: the whole pipeline on one machine with no services, state under $DERMSCREEN_HOME.

    report = screen_paths(config, [Path("lesions/")])      # what `dermscreen screen` runs
    body, media_type, extension = export_batch(config, report["batch"], "pdf")  # --format pdf
    worker = start_background_worker(config)                # what `dermscreen serve` starts

``screen_paths`` submits files the way the API does (but labels each by its path under the folder
screened, ``sub/a.png``, and files named alike by their last folders, where the API keeps only a
client's file name) and runs the worker's jobs in order in this process (ingest, then each
chunk); ``start_background_worker`` runs a Celery worker in a thread on the filesystem broker, so
the web app's enqueued tasks are handled by the same task code.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from dermscreen import accounts
from dermscreen.config import Config
from dermscreen.db.migrate import upgrade
from dermscreen.db.screening import Batch
from dermscreen.exports.content import batch_content
from dermscreen.exports.formats import render_batch
from dermscreen.db.session import session_factory
from dermscreen.db.tenancy import Hospital
from dermscreen.registry import active_version, register_bundle
from dermscreen.results import batch_results, batch_summary, results_csv
from dermscreen.storage import store_for
from dermscreen.submissions import submit_batch
from dermscreen.worker import jobs, queues
from dermscreen.worker.celery_app import app_for
from dermscreen.worker.notifier import DeliveryFailed

LOCAL_HOSPITAL = "Local screening"
# The keys of each result that `dermscreen screen --json` prints.
RESULT_KEYS = ("image", "status", "melanoma_probability", "diagnosis", "probabilities", "flagged",
               "tier", "error")
log = logging.getLogger(__name__)


def prepare_home(config: Config) -> None:
    """Create $DERMSCREEN_HOME and bring its SQLite database to the latest schema."""
    config.home.mkdir(parents=True, exist_ok=True)
    if config.database_url.startswith("sqlite"):
        upgrade(config.database_url)


def local_hospital(session) -> Hospital:
    """The hospital that embedded screening submits as (created on first use)."""
    hospital = session.scalar(select(Hospital).where(Hospital.name == LOCAL_HOSPITAL))
    return hospital or accounts.create_hospital(session, LOCAL_HOSPITAL)


def collect_files(paths: list[Path]) -> list[tuple[str, Path]]:
    """(name, path) of every file named or found under a named folder (hidden ones skipped):
    a found file by its path relative to the folder named, a named file by its file name, or by
    as many of its last folders as tell it apart from another named file of that name."""
    found = []
    names = iter(distinct_tails([path for path in paths if not path.is_dir()]))
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                    found.append((relative.as_posix(), file))
        else:
            found.append((next(names), path))
    return found


def distinct_tails(paths: list[Path]) -> list[str]:
    """Each path's shortest ending (the file name first) that no other file's ending equals (a
    file named twice keeps its file name)."""
    parts = [path.resolve().parts for path in paths]
    depth = [1] * len(parts)
    while True:
        tails = ["/".join(part[-d:]) for part, d in zip(parts, depth)]
        files = defaultdict(set)
        for tail, part in zip(tails, parts):
            files[tail].add(part)
        clashing = [i for i, tail in enumerate(tails)
                    if len(files[tail]) > 1 and depth[i] < len(parts[i])]
        if not clashing:
            return tails
        for i in clashing:
            depth[i] += 1


class _Silent:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def update(self, _count: int) -> None:
        pass


def screen_paths(config: Config, paths: list[Path], bundle_dir: str | None = None,
                 progress: Callable[[int, str], object] = lambda total, label: _Silent(),
                 metadata: Path | None = None) -> dict:
    """Screen files, folders and archives; return ``{"batch", "results", "summary"}``.

    ``bundle_dir`` scores with that bundle instead of the active model version; ``metadata`` is
    the batch's metadata CSV, as the API takes it.
    ``progress(total, label)`` makes a context manager with ``update(n)`` (e.g.
    ``click.progressbar``): once for the files checked, once for the images scored.
    """
    prepare_home(config)
    sessions = session_factory(config.database_url)
    with sessions.begin() as session:
        hospital = local_hospital(session)
        if bundle_dir:
            register_bundle(session, bundle_dir)
        else:
            active_version(session, config)
    with ExitStack() as stack, sessions.begin() as session:
        uploads = [(name, stack.enter_context(open(path, "rb")))
                   for name, path in collect_files(paths)]
        metadata_stream = stack.enter_context(open(metadata, "rb")) if metadata else None
        batch_id = submit_batch(session, config, hospital.id, uploads, metadata_stream,
                                keep_folders=True).id
    with progress(len(uploads), "checking") as bar:
        chunks = jobs.run_ingest(config, batch_id, on_upload=bar.update)
    with progress(sum(len(chunk) for chunk in chunks), "scoring") as bar:
        for chunk in chunks:
            outcome = jobs.run_predict_chunk(config, chunk, bundle_dir)
            for delivery_id in outcome.delivery_ids:
                try:
                    jobs.run_deliver(config, delivery_id)
                except DeliveryFailed as failure:  # stays pending for a worker's retries
                    log.warning("alert delivery %s failed: %s", delivery_id, failure)
            bar.update(len(chunk))
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        rows = batch_results(session, batch)
        return {"batch": batch_id,
                "results": [{key: row[key] for key in RESULT_KEYS} for row in rows],
                "summary": batch_summary(session, batch)}


def export_batch(config: Config, batch_id: str, name: str) -> tuple[bytes, str, str]:
    """The screened batch as CSV or in a hospital format
    (``dermscreen.exports.formats.BATCH_FORMATS``): body, media type, extension. The PDF and
    HTML reports first get the heatmaps of the alert tier rendered in this process, as a worker
    renders them after scoring."""
    from dermscreen.worker.heatmap_tasks import run_heatmap

    sessions = session_factory(config.database_url)
    if name == "csv":
        with sessions() as session:
            rows = batch_results(session, session.get(Batch, batch_id))
        return results_csv(rows).encode(), "text/csv", "csv"
    if name in ("pdf", "html"):
        with sessions() as session:
            rows = batch_content(session, session.get(Batch, batch_id), store_for(config)).rows
        for row in rows:
            if row["flagged"] and not row["heatmap_path"]:
                run_heatmap(config, row["image_id"])
    with sessions() as session:
        return render_batch(batch_content(session, session.get(Batch, batch_id), store_for(config)), name)


@dataclass
class BackgroundWorker:
    """A Celery worker consuming every queue in a daemon thread, and the reconciler's timer."""

    controller: object
    thread: threading.Thread
    stopping: threading.Event

    def stop(self, timeout: float = 10) -> None:
        self.stopping.set()
        self.controller.stop(in_sighandler=False)
        self.thread.join(timeout)


def start_background_worker(config: Config) -> BackgroundWorker:
    """Start the embedded worker for ``serve``: the real tasks, in-process, one at a time."""
    app = app_for(config)
    app.loader.import_default_modules()
    controller = app.WorkController(
        pool_cls="solo", concurrency=1, queues=list(queues.ALL),
        hostname=f"embedded-{os.getpid()}@{socket.gethostname()}",
        without_heartbeat=True, without_mingle=True, without_gossip=True,
    )

    def run() -> None:
        app.set_current()  # tasks resolve their app (and its Config) through this thread's
        controller.start()

    thread = threading.Thread(target=run, name="dermscreen-worker", daemon=True)
    thread.start()
    stopping = threading.Event()

    def reconcile_periodically() -> None:
        while not stopping.wait(config.reconcile_interval_seconds):
            app.send_task(queues.RECONCILE_TASK)

    threading.Thread(target=reconcile_periodically, name="dermscreen-reconciler",
                     daemon=True).start()
    return BackgroundWorker(controller, thread, stopping)
