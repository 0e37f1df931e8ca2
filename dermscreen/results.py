"""What a batch's submitter reads back: progress from the batch counters, and one row per image.

Used by the API, by ``dermscreen screen --json`` and by the pages::

    summary = batch_summary(session, batch)
    summaries = hospital_batches(session, hospital_id, limit=100, offset=0)  # newest first
    rows = batch_results(session, batch)     # by tier (alert, review, none), then probability
    text = results_csv(rows)

An image the model's gate stops has status ``unassessable``, its reason in ``error``, and no
probability or tier; the summary counts it apart from the done and failed ones.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from dermscreen.db.screening import Batch, Image, Prediction
from dermscreen.tiers import TIERS

RESULT_COLUMNS = ["image_id", "image", "status", "melanoma_probability", "diagnosis",
                  "probabilities", "flagged", "tier", "error"]


def isoformat(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset (SQLite hands back naive datetimes; they are UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def batch_summary(session: Session, batch: Batch) -> dict:
    """Status, counts and progress (0 to 1) of a batch, read from its counters (load it fresh)."""
    finished = batch.done_images + batch.failed_images + batch.unassessable_images
    return {
        "id": batch.id,
        "status": batch.status.value,
        "error": batch.error,
        "created_at": isoformat(batch.created_at),
        "completed_at": isoformat(batch.completed_at),
        "counts": {
            "total": batch.total_images,
            "done": batch.done_images,
            "failed": batch.failed_images,
            "unassessable": batch.unassessable_images,
            "flagged": batch.flagged_images,
            "pending": max(batch.total_images - finished, 0),
        },
        "progress": round(finished / batch.total_images, 4) if batch.total_images else 0.0,
    }


def hospital_batches(session: Session, hospital_id: int | None, limit: int = 100,
                     offset: int = 0) -> list[dict]:
    """The hospital's batches (every hospital's when ``hospital_id`` is None) as summaries (see
    ``batch_summary``), newest first."""
    query = select(Batch)
    if hospital_id is not None:
        query = query.where(Batch.hospital_id == hospital_id)
    query = query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit).offset(offset)
    return [batch_summary(session, batch) for batch in session.scalars(query)]


def current_prediction(image: Image) -> Prediction | None:
    """The active model version's prediction of ``image``, else its most recent one."""
    if not image.predictions:
        return None
    return max(image.predictions,
               key=lambda prediction: (prediction.model_version.active, prediction.created_at))


def result_row(image: Image) -> dict:
    prediction = current_prediction(image)
    return {
        "image_id": image.id,
        "image": image.original_name,
        "status": image.status.value,
        "melanoma_probability": prediction.melanoma_probability if prediction else None,
        "diagnosis": prediction.diagnosis if prediction else None,
        "probabilities": prediction.probabilities if prediction else None,
        "flagged": prediction.flagged if prediction else False,
        "tier": prediction.tier if prediction else None,
        "error": image.error,
    }


def result_order(row: dict):
    """Alert, review, none, then the unscored; by melanoma probability within each, then name."""
    rank = TIERS.index(row["tier"]) if row["tier"] else len(TIERS)
    return (rank, -(row["melanoma_probability"] or 0.0), row["image"])


def batch_results(session: Session, batch: Batch) -> list[dict]:
    """One row per image of ``batch`` (keys: RESULT_COLUMNS): the alert tier (flagged) first,
    then review, then none, then the images without a score; by probability within each."""
    images = session.scalars(
        select(Image).where(Image.batch_id == batch.id)
        .options(selectinload(Image.predictions).selectinload(Prediction.model_version))
    ).all()
    return sorted((result_row(image) for image in images), key=result_order)


def dicom_reference(image: Image) -> dict | None:
    """The source DICOM instance's UIDs (study, series, SOP instance, SOP class), or None."""
    if not image.dicom_sop_instance_uid:
        return None
    return {"study_uid": image.dicom_study_uid, "series_uid": image.dicom_series_uid,
            "sop_instance_uid": image.dicom_sop_instance_uid,
            "sop_class_uid": image.dicom_sop_class_uid}


def image_result(session: Session, image: Image) -> dict:
    """One image's result row with its batch, metadata, source DICOM instance (or None), and the
    model version and the alert and review thresholds that scored it."""
    row = result_row(image)
    prediction = current_prediction(image)
    row.update(
        batch_id=image.batch_id,
        details=image.details,
        dicom=dicom_reference(image),
        width=image.width,
        height=image.height,
        model_version=prediction.model_version.version if prediction else None,
        threshold=prediction.threshold if prediction else None,
        review_threshold=prediction.review_threshold if prediction else None,
    )
    return row


def results_csv(rows: list[dict]) -> str:
    """Rows as CSV: the result columns, then one ``probability_<class>`` column per class."""
    classes = sorted({name for row in rows for name in (row["probabilities"] or {})})
    columns = [column for column in RESULT_COLUMNS if column != "probabilities"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + [f"probability_{name.replace(' ', '_')}" for name in classes])
    for row in rows:
        probabilities = row["probabilities"] or {}
        writer.writerow([("" if row[column] is None else row[column]) for column in columns]
                        + [probabilities.get(name, "") for name in classes])
    return buffer.getvalue()
