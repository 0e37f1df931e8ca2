"""``dermscreen screen`` (embedded screening) and ``dermscreen worker`` (a Celery worker).

    dermscreen screen ./lesions/ archive.zip          # progress bar, then a table
    dermscreen screen ./lesions/ --json               # {"batch", "results", "summary"}
    dermscreen screen ./dicom/ --format pdf --out report.pdf   # also csv, fhir, html, sr (zip)
    dermscreen worker --queues inference -c 1         # a GPU node
    dermscreen worker --queues ingest,notify --beat   # a CPU node that also runs the reconciler
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from dermscreen.config import Config
from dermscreen.tiers import REVIEW
from dermscreen.worker import queues


OUTPUT_FORMATS = ("table", "json", "csv", "fhir", "pdf", "html", "sr")
BINARY_FORMATS = ("pdf", "sr")


def format_table(report: dict) -> str:
    """The results as a fixed-width table (alert tier first, then review, then the rest), and
    the batch's counts."""
    lines = [f"{'image':40} {'status':12} {'melanoma':>8} {'tier':6}  diagnosis / error"]
    for row in report["results"]:
        probability = row["melanoma_probability"]
        lines.append(
            f"{row['image'][-40:]:40} {row['status']:12} "
            f"{'' if probability is None else f'{probability:.3f}':>8} "
            f"{row['tier'] or '':6}  "
            f"{row['diagnosis'] or row['error'] or ''}"
        )
    counts = report["summary"]["counts"]
    review = sum(row["tier"] == REVIEW for row in report["results"])
    lines.append(f"\nbatch {report['batch']}: {counts['total']} images, {counts['done']} scored, "
                 f"{counts['failed']} failed, {counts['unassessable']} cannot be assessed; "
                 f"{counts['flagged']} flagged (alert tier), {review} in the review tier")
    return "\n".join(lines)


@click.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (--format json).")
@click.option("--format", "output_format", default="table", show_default=True,
              type=click.Choice(OUTPUT_FORMATS),
              help="table or json (as --json), csv, fhir (FHIR R4 Bundle), pdf or html (batch "
                   "report), sr (a zip of DICOM SRs, one per DICOM image).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results to this file instead of stdout (needed for pdf and sr).")
@click.option("--model", "bundle_dir", type=click.Path(exists=True, file_okay=False),
              help="Score with this model bundle instead of the active one.")
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The batch's metadata CSV (an 'image' column, then any others), as the API "
                   "takes it; it appears in every format.")
def screen(paths, as_json, output_format, out, bundle_dir, metadata):
    """Screen image files, folders, DICOM files and zip/tar.gz archives (with DICOMDIR layouts)
    on this machine (no services needed).

    State (an SQLite database, the image store) goes under $DERMSCREEN_HOME.
    """
    output_format = "json" if as_json else output_format
    if output_format in BINARY_FORMATS and out is None:
        raise click.UsageError(f"--format {output_format} writes a binary file: give --out")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dermscreen.bundle import BundleError
    from dermscreen.registry import RegistryError
    from dermscreen.exports.formats import NothingToExport
    from dermscreen.worker.embedded import export_batch, screen_paths

    def progress(total: int, label: str):
        return click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)

    config = Config.from_env()
    try:
        report = screen_paths(config, list(paths), bundle_dir, progress, metadata)
        if output_format in ("table", "json"):
            text = json.dumps(report, indent=2) if output_format == "json" else \
                format_table(report)
            body = text.encode()
        else:
            body = export_batch(config, report["batch"], output_format)[0]
    except (BundleError, RegistryError, NothingToExport) as error:
        raise click.ClickException(str(error)) from error
    if out is None:
        click.echo(body.decode().rstrip("\n"))
    else:
        out.write_bytes(body)
        click.echo(f"{output_format} written to {out}", err=True)


@click.command()
@click.option("--queues", "-Q", "queue_names", default=",".join(queues.ALL), show_default=True,
              help="Comma-separated queues to consume (GPU nodes: inference).")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes (default: one per CPU).")
@click.option("--beat", is_flag=True, help="Also run the reconciler's schedule (one node only).")
@click.option("--hostname", "-n", default=None, help="Worker node name (default celery@host).")
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(queue_names, concurrency, beat, hostname, loglevel):
    """Start a Celery worker for the configured broker (DERMSCREEN_BROKER_URL)."""
    from dermscreen.worker.celery_app import make_celery

    argv = ["worker", f"--queues={queue_names}", f"--loglevel={loglevel}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if beat:
        argv.append("--beat")
    if hostname:
        argv.append(f"--hostname={hostname}")
    config = Config.from_env()
    if not config.inference_threads:  # the node's cores shared out among the pool's processes
        cores = os.cpu_count() or 1
        config.inference_threads = max(1, cores // (concurrency or cores))
    config.home.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule file there
    if config.metrics_port:
        serve_worker_metrics(config)
    make_celery(config).worker_main(argv)


def serve_worker_metrics(config: Config) -> None:
    """Serve the metrics of this worker's processes on ``config.metrics_port``: the pool's
    children write theirs to an emptied per-node directory (multiprocess mode), read at scrape."""
    import shutil

    directory = config.home / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # before prometheus_client loads

    from prometheus_client import start_http_server

    from dermscreen.metrics import process_registry

    start_http_server(config.metrics_port, registry=process_registry())
