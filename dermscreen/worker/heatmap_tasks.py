"""The heatmap task: a Grad-CAM overlay for one image, put in the store beside the images.

The worker sends it for every flagged image after a chunk commits; the case page sends it on
demand (``dispatch.enqueue_heatmaps(config, [image_id])``). It runs on the inference queue and
uses the worker's per-process bundle, so the model is loaded once per process::

    celery -A dermscreen.worker.celery_app worker --queues inference
"""

from __future__ import annotations

import io

from celery import shared_task

from dermscreen.config import Config
from dermscreen.db.screening import Image
from dermscreen.db.session import session_factory
from dermscreen.heatmap import heatmap_png
from dermscreen.registry import active_version, bundle_path
from dermscreen.results import current_prediction
from dermscreen.storage import store_for
from dermscreen.worker import queues
from dermscreen.worker.celery_app import task_config
from dermscreen.worker.inference import worker_bundle
from dermscreen.worker.tasks import DATABASE_RETRY


def heatmap_key(image_id: str, version_id: int) -> str:
    return f"heatmaps/{image_id}-v{version_id}.png"


def run_heatmap(config: Config, image_id: str) -> str | None:
    """Render and record the heatmap of ``image_id`` for the model version that scored it (the
    active one if none has); return its store reference. None when the image is unknown or has no
    stored pixels. The model runs outside any transaction; the reference is written in a short one
    afterwards."""
    sessions = session_factory(config.database_url)
    store = store_for(config)
    with sessions.begin() as session:
        image = session.get(Image, image_id)
        if image is None or not image.stored_path:
            return None
        prediction = current_prediction(image)
        version = prediction.model_version if prediction else active_version(session, config)
        source = image.stored_path
        key = heatmap_key(image.id, version.id)
        bundle_dir = str(bundle_path(version, config))
    if store.exists(key):
        ref = store.ref(key)
    else:
        bundle = worker_bundle(bundle_dir, config.inference_threads)
        png = heatmap_png(bundle, io.BytesIO(store.read(source)))
        ref = store.put(key, png)
    with sessions.begin() as session:
        session.get(Image, image_id).heatmap_path = ref
    return ref


@shared_task(bind=True, name=queues.HEATMAP_TASK, **DATABASE_RETRY)
def heatmap(self, image_id: str) -> None:
    run_heatmap(task_config(self.app), image_id)
