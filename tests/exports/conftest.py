"""A screened batch of DICOM and plain images with a metadata CSV, for every export test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy import select

from dermscreen.db import Batch, Image
from dermscreen.exports.content import BatchContent, batch_content
from dermscreen.storage import store_for
from dermscreen.worker import jobs
from dermscreen.worker.heatmap_tasks import run_heatmap
from tests.dicom_files import dicom_bytes, photograph
from tests.factories import BLUE, PURPLE, RED, gated_images, image_bytes, lesion_image
from tests.worker.conftest import submit, worker_config  # noqa: F401 (fixtures)

METADATA = "image,age,site\nred.dcm,61,back\nblue.png,45,arm\n"


@dataclass
class Screened:
    batch_id: str
    content: BatchContent
    sources: dict  # name -> the DICOM dataset sent
    images: dict   # name -> image id


@pytest.fixture
def screened(sessions, worker_config, make_hospital, submit) -> Screened:  # noqa: F811
    sources = {"red.dcm": photograph(np.asarray(lesion_image(RED)), "jpeg-baseline-ybr-422"),
               "purple.dcm": photograph(np.asarray(lesion_image(PURPLE, seed=1)), "rgb-rle")}
    grey, _ = gated_images()["grey.png"]
    files = {name: dicom_bytes(dataset) for name, dataset in sources.items()} | {
        "blue.png": image_bytes(lesion_image(BLUE, seed=2), "PNG"), "grey.png": grey,
        "notes.jpg": b"not an image"}
    batch_id = submit(make_hospital("St. Elsewhere"), files, METADATA)
    for chunk in jobs.run_ingest(worker_config, batch_id):
        jobs.run_predict_chunk(worker_config, chunk)
    with sessions() as session:
        images = {image.original_name: image.id for image in
                  session.scalars(select(Image).where(Image.batch_id == batch_id))}
    run_heatmap(worker_config, images["red.dcm"])  # as the worker does for an alert
    with sessions() as session:
        content = batch_content(session, session.get(Batch, batch_id), store_for(worker_config))
    return Screened(batch_id, content, sources, images)
