"""End-to-end throughput of the screening pipeline beside the bare model, on this machine.

    python benchmarks/pipeline_throughput.py [--images FOLDER] [-n 600] [--mode both]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--redis redis://127.0.0.1:6380/5] [--workers 2] [--plot pipeline.png]

The images are the first N JPEG/PNG files under FOLDER (by default ``../shared/data/extra/images``
when it exists), else N generated lesion-like JPEGs. The same bundle (the shipped default unless
``--model``) scores them in four ways, in one run, so that the ratios hold on a busy machine:

- **bare ceiling**: one process, no services: decode each file (``Bundle.prepare``) and run
  ``Bundle.predict`` (the views), and ``Bundle.screen`` (the gate, then the views, what the
  workers run), in batches of the chunk size;
- **embedded**: ``dermscreen screen``'s path (``screen_paths``: SQLite, jobs run in this process),
  with each stage timed in-process (submit, ingest, decode, forward pass, DB write, alert);
- **distributed**: a throwaway PostgreSQL database and a Redis database, the Flask API over real
  HTTP, ``--workers`` ``dermscreen worker`` processes (the first also ingests and notifies); the
  images are POSTed as one zip to ``/api/v1/batches`` and the batch is polled until done. Each
  worker runs ONNX Runtime on its share of the cores (``inference_threads``: cores / workers).
  Its stages come from the rows' timestamps (upload, ingest, queue wait and scoring per image;
  the alerts are written with the predictions, and no channel is configured, so nothing is
  mailed); the heatmaps of the alert tier, drawn after the scoring, are timed apart.

It prints one table: images/s, ratio to both ceilings, time to first result, and seconds per
image in each stage; ``--plot`` draws it.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np

from dermscreen.config import Config

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "extra" / "images"
SUFFIXES = {".jpg", ".jpeg", ".png"}


def pick_images(folder: Path | None, count: int, work: Path) -> list[Path]:
    """The first ``count`` images under ``folder``, or ``count`` generated JPEGs under ``work``."""
    if folder is not None and folder.is_dir():
        found = sorted(path for path in folder.rglob("*") if path.suffix.lower() in SUFFIXES)
        if len(found) >= count:
            return found[:count]
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = work / "generated"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        skin = tuple(int(c) for c in rng.integers(150, 230, 3))
        image = Image.new("RGB", (600, 450), skin)
        draw = ImageDraw.Draw(image)
        x, y, r = (int(v) for v in (rng.integers(200, 400), rng.integers(150, 300),
                                     rng.integers(50, 140)))
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=tuple(int(c) for c in rng.integers(40, 120, 3)))
        path = out / f"lesion-{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def bare_ceiling(bundle_dir: str, paths: list[Path], chunk: int) -> dict:
    """Images/s of decode + predict and of decode + screen in one process (after a warm-up)."""
    from dermscreen.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    bundle.screen([bundle.prepare(path) for path in paths[:chunk]])  # warm-up
    out = {}
    for name in ("predict", "screen"):
        start = time.perf_counter()
        for first in range(0, len(paths), chunk):
            prepared = [bundle.prepare(path) for path in paths[first:first + chunk]]
            if name == "predict":
                bundle.predict(np.stack([item.pixels for item in prepared]))
            else:
                bundle.screen(prepared)
        out[name] = len(paths) / (time.perf_counter() - start)
    return out


class Stages:
    """Seconds spent in each named stage, summed over calls of wrapped functions."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

        setattr(owner, attribute, timed)


def run_embedded(bundle_dir: str, paths: list[Path], chunk: int, work: Path) -> dict:
    """``screen_paths`` on a fresh home, each stage timed in this process."""
    from dermscreen import bundle as bundle_module
    from dermscreen.config import Config
    from dermscreen.db.screening import Batch, Prediction
    from dermscreen.db.session import session_factory
    from dermscreen.worker import embedded, jobs

    folder = work / "embedded-images"
    folder.mkdir()
    for index, path in enumerate(paths):
        os.link(path, folder / f"{index:04d}{path.suffix.lower()}")
    config = Config(home=work / "embedded-home", chunk_size=chunk, smtp_url="")
    embedded.prepare_home(config)
    stages = Stages()
    stages.wrap(embedded, "submit_batch", "upload")
    stages.wrap(jobs, "run_ingest", "ingest")
    stages.wrap(bundle_module.Bundle, "prepare", "decode")
    stages.wrap(bundle_module.Bundle, "screen", "forward pass")
    stages.wrap(jobs, "record_chunk", "DB write")
    stages.wrap(jobs, "run_deliver", "alert")
    jobs.worker_bundle(bundle_dir).screen([])  # the model is loaded before the clock starts
    start = time.perf_counter()
    report = embedded.screen_paths(config, [folder], bundle_dir)
    wall = time.perf_counter() - start
    with session_factory(config.database_url)() as session:
        batch = session.get(Batch, report["batch"])
        first = min(p.created_at for p in session.query(Prediction).join(Prediction.image)
                    .filter_by(batch_id=batch.id))
        first_result = (first - batch.created_at).total_seconds()
    return {"images_per_s": len(paths) / wall, "first_result_s": first_result,
            "stages": stages.seconds, "counts": report["summary"]["counts"], "wall_s": wall,
            "note": "stages timed in-process"}


@contextmanager
def postgres_database(server_url: str, prefix: str = "bench"):
    """A throwaway database on the server of ``server_url``, migrated; dropped afterwards over a
    new connection (a drill may have restarted the server meanwhile)."""
    import psycopg
    from sqlalchemy.engine import make_url

    from dermscreen.db.migrate import upgrade
    from dermscreen.db.session import engine_for

    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    def admin():
        return psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                               password=url.password, dbname=url.database or "postgres",
                               autocommit=True)

    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = url.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(database)
        yield database
    finally:
        engine_for(database).dispose()
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def zip_of(paths: list[Path]) -> bytes:
    """The images as one zip, members numbered in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, path in enumerate(paths):
            archive.write(path, f"{index:04d}{path.suffix.lower()}")
    return buffer.getvalue()


def run_distributed(bundle_dir: str, paths: list[Path], chunk: int, work: Path,
                    postgres: str, redis_url: str, workers: int) -> dict:
    """POST the images as one zip to the API; ``workers`` worker processes score them."""
    import redis
    import requests
    from sqlalchemy import func, select
    from werkzeug.serving import make_server

    from dermscreen import accounts
    from dermscreen.config import Config
    from dermscreen.db.screening import Batch, Image, Prediction
    from dermscreen.db.session import session_factory
    from dermscreen.registry import register_bundle
    from dermscreen.web import create_app

    redis.Redis.from_url(redis_url).flushdb()
    body = zip_of(paths)
    with postgres_database(postgres) as database:
        config = Config(home=work / "distributed-home", database_url=database,
                        broker_url=redis_url, model_bundle=bundle_dir,
                        store_dir=str(work / "distributed-store"), chunk_size=chunk,
                        inference_threads=max(1, (os.cpu_count() or 1) // workers),
                        max_upload_bytes=max(len(body) * 2, 512 * 1024 * 1024))
        sessions = session_factory(database)
        with sessions.begin() as session:
            register_bundle(session, bundle_dir)
            hospital = accounts.create_hospital(session, "Benchmark")
            _, token = accounts.issue_token(session, hospital, name="benchmark")
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("DERMSCREEN_")}
        env.update({f"DERMSCREEN_{k.upper()}": str(v) for k, v in asdict(config).items()})
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        processes, logs = [], []
        for index in range(workers):
            queues = "ingest,inference" if index == 0 else "inference"
            log = open(work / f"worker{index}.log", "wb")
            logs.append(log)
            processes.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("dermscreen")), "worker", "--queues", queues,
                 "--concurrency", "1", "--hostname", f"bench{index}@%h"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, create_app(config), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        api = f"http://127.0.0.1:{server.server_port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            _wait_ready(work, workers)
            # Warm each worker's model (its first chunk loads the bundle) before the clock starts.
            warm = requests.post(f"{api}/batches", headers=headers,
                                 files=[("files", ("warm.zip", zip_of(paths[:2 * workers])))])
            _wait_done(api, headers, warm.json()["id"])
            start = time.perf_counter()
            response = requests.post(f"{api}/batches", headers=headers,
                                     files=[("files", ("batch.zip", body))])
            upload = time.perf_counter() - start
            batch_id = response.json()["id"]
            counts = _wait_done(api, headers, batch_id)
            wall = time.perf_counter() - start
            _wait_heatmaps(sessions, batch_id, counts["flagged"])
            heatmapped = time.perf_counter() - start
        finally:
            server.shutdown()
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            for log in logs:
                log.close()
        with sessions() as session:
            batch = session.get(Batch, batch_id)
            queued = session.execute(select(func.min(Image.queued_at), func.max(Image.queued_at))
                                     .where(Image.batch_id == batch_id)).one()
            waits = session.execute(
                select(Image.queued_at, Prediction.created_at).join(Prediction)
                .where(Image.batch_id == batch_id)).all()
        first_result = min(done for _, done in waits) - batch.created_at
        count = len(paths)
        stages = {
            "upload": upload,
            "ingest": (queued[1] - batch.created_at).total_seconds(),
            "queue wait + score (mean latency)": sum((done - queue).total_seconds() for queue, done in waits),
        }
        return {"images_per_s": count / wall, "first_result_s": first_result.total_seconds(),
                "stages": stages, "counts": counts, "wall_s": wall,
                "note": f"stages from row timestamps; queue wait + score summed over images; "
                        f"the {counts['flagged']} heatmaps of the alert tier were drawn "
                        f"{heatmapped - wall:.1f} s after the last image was scored"}


def _wait_ready(work: Path, workers: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(" ready." in (work / f"worker{i}.log").read_text(errors="replace")
               for i in range(workers)):
            return
        time.sleep(0.5)
    raise click.ClickException(f"the workers did not start; see {work}/worker*.log")


def _wait_heatmaps(sessions, batch_id: str, flagged: int, timeout: float = 3600) -> None:
    from sqlalchemy import func, select

    from dermscreen.db.screening import Image

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            drawn = session.scalar(select(func.count()).where(
                Image.batch_id == batch_id, Image.heatmap_path.is_not(None)))
        if drawn >= flagged:
            return
        time.sleep(0.2)
    raise click.ClickException(f"the heatmaps of batch {batch_id} not drawn after {timeout}s")


def _wait_done(api: str, headers: dict, batch_id: str, timeout: float = 3600) -> dict:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = requests.get(f"{api}/batches/{batch_id}", headers=headers).json()
        if summary["status"] in {"done", "failed"}:
            return summary["counts"]
        time.sleep(0.2)
    raise click.ClickException(f"batch {batch_id} not done after {timeout}s")


def table(ceiling: dict, runs: dict[str, dict], count: int) -> str:
    stage_names = []
    for run in runs.values():
        stage_names += [name for name in run["stages"] if name not in stage_names]
    lines = [f"{count} images; bare ceiling (one process, decode + predict): "
             f"{ceiling['predict']:.1f} images/s; decode + screen (gate + predict, what the "
             f"workers run): {ceiling['screen']:.1f} images/s",
             "",
             "| mode | images/s | / predict ceiling | / screen ceiling | first result (s) | "
             + " | ".join(f"{name} (s/image)" for name in stage_names) + " |",
             "|" + "---|" * (5 + len(stage_names))]
    for mode, run in runs.items():
        cells = [f"{run['stages'][name] / count:.4f}" if name in run["stages"] else ""
                 for name in stage_names]
        lines.append(f"| {mode} | {run['images_per_s']:.1f} | "
                     f"{run['images_per_s'] / ceiling['predict']:.2f} | "
                     f"{run['images_per_s'] / ceiling['screen']:.2f} | "
                     f"{run['first_result_s']:.1f} | " + " | ".join(cells) + " |")
    lines.append("")
    for mode, run in runs.items():
        lines.append(f"{mode}: {run['counts']}; {run['wall_s']:.1f} s wall; {run['note']}")
    return "\n".join(lines)


def draw(ceiling: dict, runs: dict[str, dict], count: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["ceiling: predict", "ceiling: screen"] + list(runs)
    values = [ceiling["predict"], ceiling["screen"]] + [run["images_per_s"] for run in runs.values()]
    left.barh(names, values, color=["#888", "#aaa"] + ["#3b7dd8"] * len(runs))
    left.set_xlabel("images/s")
    left.set_title(f"throughput, {count} images")
    bottom = np.zeros(len(runs))
    # Latencies are not shares of an image's cost: they are in the table, not stacked here.
    stage_names = sorted({name for run in runs.values() for name in run["stages"]
                          if "latency" not in name})
    for name in stage_names:
        seconds = np.array([run["stages"].get(name, 0.0) / count for run in runs.values()])
        right.bar([mode.split(" (")[0] for mode in runs], seconds, bottom=bottom, label=name)
        bottom += seconds
    right.set_ylabel("seconds per image")
    right.set_title("where the time goes")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


@click.command()
@click.option("--images", "folder", type=click.Path(path_type=Path),
              default=SHARED_IMAGES, show_default=True)
@click.option("-n", "count", type=int, default=600, show_default=True)
@click.option("--model", default=None, help="bundle directory (default: the shipped bundle)")
@click.option("--mode", type=click.Choice(["embedded", "distributed", "both"]), default="both")
@click.option("--chunk", type=int, default=Config.chunk_size, show_default=True,
              help="images per chunk")
@click.option("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
              show_default=True, help="a server where a throwaway database can be created")
@click.option("--redis", "redis_url", default="redis://127.0.0.1:6380/5", show_default=True,
              help="a Redis database the run may empty")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--plot", default=None, help="PNG to draw")
def main(folder, count, model, mode, chunk, postgres, redis_url, workers, plot):
    from dermscreen.config import DEFAULT_BUNDLE

    bundle_dir = str(model or DEFAULT_BUNDLE)
    work = Path(tempfile.mkdtemp(prefix="dermscreen-bench-"))
    try:
        paths = pick_images(folder, count, work)
        source = folder if paths[0].is_relative_to(folder) else "generated"
        click.echo(f"{count} images from {source}; bundle {bundle_dir}; chunks of {chunk}; "
                   f"{os.cpu_count()} CPUs", err=True)
        ceiling = bare_ceiling(bundle_dir, paths, chunk)
        runs = {}
        if mode in ("embedded", "both"):
            runs["embedded (SQLite, in-process)"] = run_embedded(bundle_dir, paths, chunk, work)
        if mode in ("distributed", "both"):
            runs[f"distributed (PostgreSQL + Redis, {workers} workers)"] = run_distributed(
                bundle_dir, paths, chunk, work, postgres, redis_url, workers)
        click.echo(table(ceiling, runs, count))
        if plot:
            draw(ceiling, runs, count, plot)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
