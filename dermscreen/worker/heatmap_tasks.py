"""The heatmap task: a Grad-CAM overlay for one image, stored beside the images.

The worker sends it for every flagged image after a chunk commits; the case page sends it on
demand (``dispatch.enqueue_heatmaps(config, [image_id])``). It runs on the inference queue and
uses the worker's per-process bundle, so the model is loaded once per process::

    celery -A dermscreen.worker.celery_app worker --queues inference
"""

from __future__ import annotations

from pathlib import Path

from celery import shared_task

from dermscreen.config import Config
from dermscreen.db.screening import Image
from dermscreen.db.session import session_factory
from dermscreen.heatmap import render_heatmap
from dermscreen.registry import active_version, bundle_path
from dermscreen.results import current_prediction
from dermscreen.worker import queues
from dermscreen.worker.celery_app import task_config
from dermscreen.worker.inference import worker_bundle
from dermscreen.worker.tasks import DATABASE_RETRY


def heatmap_file(config: Config, image_id: str, version_id: int) -> Path:
    return Path(config.store_dir) / "heatmaps" / f"{image_id}-v{version_id}.png"


def run_heatmap(config: Config, image_id: str) -> Path | None:
    """Render and record the heatmap of ``image_id`` for the model version that scored it (the
    active one if none has). None when the image is unknown or has no stored pixels. The model runs
    outside any transaction; the path is written in a short one afterwards."""
    sessions = session_factory(config.database_url)
    with sessions.begin() as session:
        image = session.get(Image, image_id)
        if image is None or not image.stored_path:
            return None
        prediction = current_prediction(image)
        version = prediction.model_version if prediction else active_version(session, config)
        source = Path(image.stored_path)
        if not source.is_absolute():
            source = Path(config.store_dir) / source
        out = heatmap_file(config, image.id, version.id)
        bundle_dir = str(bundle_path(version, config))
    if not out.is_file():
        render_heatmap(worker_bundle(bundle_dir), source, out)
    with sessions.begin() as session:
        session.get(Image, image_id).heatmap_path = str(out)
    return out


@shared_task(bind=True, name=queues.HEATMAP_TASK, **DATABASE_RETRY)
def heatmap(self, image_id: str) -> None:
    run_heatmap(task_config(self.app), image_id)
