"""All settings in one place, read from ``DERMSCREEN_*`` environment variables.

Embedded mode (the default) keeps everything under ``$DERMSCREEN_HOME``: an SQLite database, a
filesystem broker and the image store. Distributed mode points the same code at PostgreSQL and
Redis by setting ``DERMSCREEN_DATABASE_URL`` and ``DERMSCREEN_BROKER_URL``.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_BUNDLE = PACKAGE_DIR / "bundles" / "default"


def _home() -> Path:
    return Path(os.environ.get("DERMSCREEN_HOME", Path.home() / ".dermscreen")).expanduser()


def _env(name: str, default):
    """Read ``DERMSCREEN_<NAME>`` and coerce it to the type of ``default``."""
    raw = os.environ.get(f"DERMSCREEN_{name}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


@dataclass
class Config:
    """Settings of one deployment. ``Config.from_env()`` is what every entry point uses."""

    home: Path = field(default_factory=_home)
    # Databases: SQLite under home by default, PostgreSQL in production.
    database_url: str = ""
    # Celery broker: a filesystem broker under home by default, Redis in production.
    broker_url: str = ""
    # Model bundle that scores images (a directory, see dermscreen.bundle).
    model_bundle: str = str(DEFAULT_BUNDLE)
    # Where uploads, images and heatmaps are stored (see dermscreen.storage): a directory by
    # default; object storage when store_url is set (s3://bucket/prefix), with its endpoint
    # (empty: AWS) and credentials (empty: boto3's own chain, AWS_* variables or an IAM role).
    store_dir: str = ""
    store_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # Flask session signing key; must be set in production.
    secret_key: str = "dev-only-change-me"
    # Images per inference task: on 2 cores with 2 workers, 16 scored 600 images end to end at
    # 0.95 of the one-process ceiling and 32 at 0.85 (docs/pipeline.md); raise it for GPUs.
    chunk_size: int = 16
    # ONNX Runtime threads of each worker process. Processes that share a node's cores must
    # share them out (2 processes on 2 cores: 1 each), or their threads fight over the cores
    # (benchmarks/pipeline_throughput.py); 0: `dermscreen worker` divides the cores among its
    # pool, elsewhere one per core.
    inference_threads: int = 0
    # Images still queued, and never taken by a worker, after this many seconds are re-enqueued
    # by the reconciler (a lost message).
    queue_lease_seconds: int = 600
    # A worker holds the images of the chunk it scores for this long, and renews the lease every
    # third of it while the chunk runs; the reconciler re-enqueues images whose lease has passed
    # (their worker died), so a dead worker's chunk runs again within a lease and an interval.
    chunk_lease_seconds: int = 30
    # Upload and archive limits.
    max_upload_bytes: int = 512 * 1024 * 1024
    max_archive_members: int = 10_000
    max_extracted_bytes: int = 2 * 1024 * 1024 * 1024
    max_compression_ratio: int = 100
    max_image_pixels: int = 50_000_000
    # Alert delivery.
    smtp_url: str = ""  # e.g. smtp://user:pass@host:587 ; empty disables email
    mail_from: str = "dermscreen@localhost"
    public_url: str = "http://localhost:5000"
    notify_max_retries: int = 8
    notify_backoff_seconds: int = 30  # first retry delay; doubles per attempt, at most an hour
    # Workers: the longest a task may run (hard limit, seconds), and how long Redis waits before
    # giving an unacknowledged message (a dead worker's) to another worker; must be longer.
    task_time_limit: int = 1800
    visibility_timeout: int = 3600
    reconcile_interval_seconds: int = 10  # celery beat runs the reconciler this often
    # Prometheus: the port where `dermscreen worker` serves its metrics (0: none; the web app
    # serves them at /metrics). See dermscreen.metrics.
    metrics_port: int = 0

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'dermscreen.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.store_dir:
            self.store_dir = str(self.home / "store")

    @property
    def embedded(self) -> bool:
        """True when the broker is the local filesystem transport."""
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @classmethod
    def from_env(cls, **overrides) -> "Config":
        values = {f.name: _env(f.name.upper(), f.default) for f in fields(cls) if f.default is not MISSING}
        values.update(overrides)
        return cls(**values)
