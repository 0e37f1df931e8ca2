"""Inference on a chunk of images: the bundle's gate, one batched forward pass, idempotent
writes, alerts, counters.

    bundle = worker_bundle(str(bundle_path(version, config)), config.inference_threads)
    with sessions() as session:
        stored = queued_paths(session, image_ids)
    scored = score_images(bundle, store_for(config), stored)    # no database while the model runs
    with sessions.begin() as session:
        outcome = record_chunk(session, config, bundle, image_ids, scored)
    # after the commit: enqueue outcome.delivery_ids and outcome.flagged_image_ids

A chunk can be run twice (a worker killed before acknowledging it, a duplicate message): only
images still ``queued`` are recorded, predictions are inserted ``ON CONFLICT DO NOTHING`` on
(image, model version), an image moves to done/failed/unassessable only from queued, and the batch
counters grow by the images this run moved. So nothing is lost, and nothing is counted or alerted
twice. A rerun also hands back the unsent deliveries and missing heatmaps of images already done,
in case the first run died after its commit but before its messages.

An image the bundle's gate stops (``Bundle.screen``: not dermoscopy, or unusable) becomes
``unassessable`` with the gate's reason in ``error``: no prediction, no tier, no alert.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from dermscreen.bundle import Bundle, Screening, load_bundle
from dermscreen.config import Config
from dermscreen.db.alerts import Alert, Delivery, DeliveryStatus
from dermscreen.db.screening import Image, ImageStatus, ModelVersion, Prediction
from dermscreen.db.tenancy import Hospital
from dermscreen.registry import register_loaded
from dermscreen.storage import Store
from dermscreen.tiers import ALERT, tier
from dermscreen.worker.alerting import (alert_threshold, dialect_insert, raise_alert,
                                        review_threshold)
from dermscreen.worker.batches import add_counts, close_if_complete


@lru_cache(maxsize=2)
def worker_bundle(path: str, threads: int = 0) -> Bundle:
    """The bundle at ``path``, loaded once per process on first use (so after any fork)."""
    return load_bundle(path, threads=threads)


@dataclass
class ChunkOutcome:
    """What a run of a chunk did, and the messages to send after its commit (deliveries to
    make, flagged images to draw heatmaps for)."""

    done: int = 0
    failed: int = 0
    unassessable: int = 0
    flagged_image_ids: list[str] = field(default_factory=list)
    delivery_ids: list[int] = field(default_factory=list)


@dataclass
class Scored:
    """One image's screening, or why it could not be read from the store."""

    image_id: str
    screening: Screening | None = None
    unreadable: str | None = None


@dataclass
class _Counts:
    done: int = 0
    failed: int = 0
    unassessable: int = 0
    flagged: int = 0


def _finish_image(session: Session, image: Image, status: ImageStatus, error: str | None) -> bool:
    """Move ``image`` from queued to ``status``; False when another run already moved it."""
    return bool(session.execute(
        update(Image).where(Image.id == image.id, Image.status == ImageStatus.QUEUED)
        .values(status=status, error=error, held_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount)


def _insert_prediction(session: Session, image: Image, version: ModelVersion, bundle: Bundle,
                       probabilities: np.ndarray, threshold: float,
                       review: float) -> tuple[int | None, bool]:
    """Insert the prediction unless this (image, version) has one; (its id or None, flagged)."""
    melanoma = float(probabilities[bundle.melanoma_index])
    level = tier(melanoma, threshold, review)
    flagged = level == ALERT
    prediction_id = session.execute(
        dialect_insert(session, Prediction)
        .values(image_id=image.id, model_version_id=version.id,
                probabilities={name: float(p) for name, p in zip(bundle.classes, probabilities)},
                melanoma_probability=melanoma,
                diagnosis=bundle.classes[int(np.argmax(probabilities))],
                threshold=threshold, review_threshold=review, tier=level, flagged=flagged)
        .on_conflict_do_nothing(index_elements=["image_id", "model_version_id"])
        .returning(Prediction.id)
    ).scalar()
    return prediction_id, flagged


def _update_batches(session: Session, counts: dict[str, _Counts]) -> None:
    """Add this run's counts to each batch and close the batches that are complete."""
    for batch_id, count in counts.items():
        add_counts(session, batch_id, done=count.done, failed=count.failed,
                   unassessable=count.unassessable, flagged=count.flagged)
        close_if_complete(session, batch_id)


def _unsent_follow_ups(session: Session, image_ids: list[str]) -> ChunkOutcome:
    """What an earlier run of this chunk committed but may not have enqueued (it died between
    its commit and its messages): unclaimed pending deliveries and missing heatmaps."""
    done = and_(Image.id.in_(image_ids), Image.status == ImageStatus.DONE)
    outcome = ChunkOutcome()
    outcome.delivery_ids = list(session.scalars(
        select(Delivery.id).join(Alert).join(Image, Alert.image_id == Image.id)
        .where(done, Delivery.status == DeliveryStatus.PENDING,
               Delivery.next_attempt_at.is_(None))
        .order_by(Delivery.id)))
    outcome.flagged_image_ids = list(session.scalars(
        select(Image.id).join(Prediction)
        .where(done, Prediction.flagged.is_(True), Image.heatmap_path.is_(None))
        .order_by(Image.id)))
    return outcome


def queued_paths(session: Session, image_ids: list[str]) -> list[tuple[str, str]]:
    """(id, stored path) of the images of ``image_ids`` still queued, by id."""
    return [tuple(row) for row in session.execute(
        select(Image.id, Image.stored_path).where(Image.id.in_(image_ids),
                                                  Image.status == ImageStatus.QUEUED)
        .order_by(Image.id))]


def score_images(bundle: Bundle, store: Store, stored: list[tuple[str, str]]) -> list[Scored]:
    """Read each image from the store, decode it once and screen them all in one batch (no
    database here)."""
    scored, prepared = [], []
    for image_id, path in stored:
        try:
            data = store.read(path)
        except OSError as error:
            scored.append(Scored(image_id, unreadable=f"unreadable in store: {error}"))
            continue
        try:
            prepared.append(bundle.prepare(io.BytesIO(data)))
        except (OSError, ValueError) as error:  # a JPEG stored whole, its image data damaged
            scored.append(Scored(image_id, unreadable=f"corrupt image: {error}"))
        else:
            scored.append(Scored(image_id))
    readable = [item for item in scored if item.unreadable is None]
    for item, screening in zip(readable, bundle.screen(prepared)):
        item.screening = screening
    return scored


def record_chunk(session: Session, config: Config, bundle: Bundle, image_ids: list[str],
                 scored: list[Scored]) -> ChunkOutcome:
    """Write what ``score_images`` found for the images of the chunk ``image_ids`` that are still
    queued: predictions and alerts of those the gate let through, the reason for the others.

    The caller commits, then enqueues the outcome's deliveries and heatmaps.
    """
    outcome = _unsent_follow_ups(session, image_ids)
    images = {image.id: image for image in session.scalars(
        select(Image).where(Image.id.in_([item.image_id for item in scored]),
                            Image.status == ImageStatus.QUEUED))}
    if not images:
        return outcome
    version = register_loaded(session, bundle)  # the version that really scores
    review = review_threshold(version)
    counts: dict[str, _Counts] = {}
    hospitals: dict[int, Hospital] = {}
    for item in scored:
        image = images.get(item.image_id)
        if image is None:
            continue  # another run of this chunk recorded it first
        if item.unreadable:
            if _finish_image(session, image, ImageStatus.FAILED, item.unreadable):
                counts.setdefault(image.batch_id, _Counts()).failed += 1
                outcome.failed += 1
            continue
        screening = item.screening
        if screening.unassessable:
            if _finish_image(session, image, ImageStatus.UNASSESSABLE, screening.unassessable):
                counts.setdefault(image.batch_id, _Counts()).unassessable += 1
                outcome.unassessable += 1
            continue
        hospital = hospitals.get(image.hospital_id) or session.get(Hospital, image.hospital_id)
        hospitals[hospital.id] = hospital
        prediction_id, flagged = _insert_prediction(session, image, version, bundle,
                                                    screening.probabilities,
                                                    alert_threshold(hospital, version), review)
        if prediction_id is None or not _finish_image(session, image, ImageStatus.DONE, None):
            continue  # another run of this chunk wrote it first
        count = counts.setdefault(image.batch_id, _Counts())
        count.done += 1
        outcome.done += 1
        if flagged:
            count.flagged += 1
            outcome.flagged_image_ids.append(image.id)
            outcome.delivery_ids += raise_alert(session, config, image, prediction_id, version,
                                                hospital)
    _update_batches(session, counts)
    return outcome
