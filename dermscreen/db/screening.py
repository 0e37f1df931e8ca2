"""Batches of submitted images, the model versions that score them, and their predictions."""

from __future__ import annotations

import enum
from typing import Optional

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dermscreen.db.base import Base, created, intpk, str_enum, timestamp, uidpk
from dermscreen.tiers import TIERS


class BatchStatus(str, enum.Enum):
    RECEIVED = "received"      # upload stored, not yet unpacked
    PROCESSING = "processing"  # being unpacked (until ingested_at) and scored, chunk by chunk
    DONE = "done"              # every image done, failed or unassessable
    FAILED = "failed"          # the upload itself was refused (malformed archive, ...)


class ImageStatus(str, enum.Enum):
    RECEIVED = "received"
    QUEUED = "queued"
    DONE = "done"                  # scored: it has a prediction
    FAILED = "failed"              # not a readable image (the reason in ``error``)
    UNASSESSABLE = "unassessable"  # stopped by the model's gate (the reason in ``error``)


class ModelVersion(Base):
    """A registered model bundle; exactly one is active."""

    __tablename__ = "model_versions"

    id: Mapped[intpk]
    version: Mapped[str] = mapped_column(String(100), unique=True)
    path: Mapped[str] = mapped_column(String(500))
    classes: Mapped[list]
    alert_threshold: Mapped[float]
    card: Mapped[dict]  # the bundle's metadata.json
    active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created]


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[uidpk]
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    submitted_by_token_id: Mapped[Optional[int]] = mapped_column(ForeignKey("api_tokens.id"))
    submitted_by_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    status: Mapped[BatchStatus] = mapped_column(str_enum(BatchStatus), default=BatchStatus.RECEIVED)
    upload_dir: Mapped[str] = mapped_column(String(500))
    error: Mapped[Optional[str]] = mapped_column(Text)
    # Ingest commits the uploads' entries (files, archive members, refusals) a chunk at a time,
    # so scoring starts at once: how many are committed, when the last was, and the lease of
    # the worker unpacking them (dermscreen.worker.ingest).
    ingested_entries: Mapped[int] = mapped_column(default=0)
    ingested_at: Mapped[Optional[timestamp]]
    held_until: Mapped[Optional[timestamp]]
    # Counters kept in the database (no chords): total grows while ingest runs.
    total_images: Mapped[int] = mapped_column(default=0)
    done_images: Mapped[int] = mapped_column(default=0)
    failed_images: Mapped[int] = mapped_column(default=0)
    unassessable_images: Mapped[int] = mapped_column(default=0)
    flagged_images: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[created]
    completed_at: Mapped[Optional[timestamp]]

    images: Mapped[list["Image"]] = relationship(back_populates="batch", order_by="Image.created_at")


class Image(Base):
    __tablename__ = "images"

    id: Mapped[uidpk]
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    original_name: Mapped[str] = mapped_column(String(500))
    content_hash: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    stored_path: Mapped[Optional[str]] = mapped_column(String(500))
    width: Mapped[Optional[int]]
    height: Mapped[Optional[int]]
    status: Mapped[ImageStatus] = mapped_column(
        str_enum(ImageStatus), default=ImageStatus.RECEIVED, index=True
    )
    error: Mapped[Optional[str]] = mapped_column(Text)
    # Per-image metadata from the optional CSV (patient age, site, ...), as given.
    details: Mapped[Optional[dict]]
    # For a DICOM upload, the source instance's UIDs (dermscreen.worker.dicom.KEPT_ATTRIBUTES),
    # so results can be filed back; no other DICOM attribute is kept.
    dicom_study_uid: Mapped[Optional[str]] = mapped_column(String(64))
    dicom_series_uid: Mapped[Optional[str]] = mapped_column(String(64))
    dicom_sop_instance_uid: Mapped[Optional[str]] = mapped_column(String(64))
    dicom_sop_class_uid: Mapped[Optional[str]] = mapped_column(String(64))
    queued_at: Mapped[Optional[timestamp]]
    # While a worker scores it: a short lease, renewed by the worker's heartbeat. A queued image
    # whose lease has passed was held by a worker that died (dermscreen.worker.leases).
    held_until: Mapped[Optional[timestamp]]
    heatmap_path: Mapped[Optional[str]] = mapped_column(String(500))
    created_at: Mapped[created]

    batch: Mapped[Batch] = relationship(back_populates="images")
    predictions: Mapped[list["Prediction"]] = relationship(back_populates="image")


class Prediction(Base):
    """One model version's scores for one image; written idempotently (unique on the pair)."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id"),
        CheckConstraint("tier IN ({})".format(", ".join(f"'{tier}'" for tier in TIERS)),
                        name="tier"),
    )

    id: Mapped[intpk]
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    probabilities: Mapped[dict]  # class name -> calibrated probability
    melanoma_probability: Mapped[float]
    diagnosis: Mapped[str] = mapped_column(String(100))  # most probable class
    threshold: Mapped[float]  # the alert threshold in force when it was scored
    review_threshold: Mapped[float]  # the review threshold in force when it was scored
    tier: Mapped[str] = mapped_column(String(16))  # alert, review or none (dermscreen.tiers)
    flagged: Mapped[bool]  # exactly the alert tier: it raised an alert
    created_at: Mapped[created]

    image: Mapped[Image] = relationship(back_populates="predictions")
    model_version: Mapped[ModelVersion] = relationship()
