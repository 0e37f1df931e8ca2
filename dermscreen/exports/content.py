"""What every hospital-format output of a batch holds, gathered once from the database.

    content = batch_content(session, batch, store_for(config))
    content.summary, content.rows, content.model, content.hospital

Each row is ``results.image_result`` (status, scores, tier, the hospital's metadata in
``details``, the source DICOM instance in ``dicom``) plus where its pixels and heatmap are
stored (references into ``content.store``), ordered as the results are (alert, review, none, then the unscored).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from dermscreen.db.base import utcnow
from dermscreen.db.screening import Batch, Image, ModelVersion, Prediction
from dermscreen.db.tenancy import Hospital
from dermscreen.measured import fmt
from dermscreen.registry import review_threshold
from dermscreen.results import batch_summary, image_result, isoformat, result_order
from dermscreen.storage import Store

# What the service is for, in every report (as the README and the model card say it).
INTENDED_USE = (
    "Research screening aid for dermoscopic images of skin lesions. It alerts dermatologists to "
    "images that are probably melanoma and lists for their review, sorted, those it cannot rule "
    "out; images that are not dermoscopy or are unusable get no score. It assists "
    "dermatologists, it never replaces them. Not a medical device: no diagnosis may rest on it."
)
# The headline numbers a report shows of each data set the model card measured.
HEADLINE_METRICS = ("melanoma_auc", "sensitivity", "specificity")


@dataclass
class BatchContent:
    summary: dict
    hospital: str
    rows: list[dict]
    model: dict | None  # name, version, alert/review thresholds, headline metrics
    store: Store  # where the rows' pixels and heatmaps are read from
    generated_at: str = field(default="")


def model_headline(version: ModelVersion | None) -> dict | None:
    """The scoring model's name and version and its card's headline numbers, as written text,
    one entry per data set the card measured it on."""
    if version is None:
        return None
    card = version.card or {}
    measured = []
    for name, metrics in (card.get("metrics") or {}).items():
        if not isinstance(metrics, dict) or "melanoma_auc" not in metrics:
            continue
        intervals = metrics.get("ci95") or {}
        measured.append({
            "data": metrics.get("data", name),
            "n": metrics.get("n"), "melanomas": metrics.get("melanomas"),
            **{key: fmt(metrics.get(key), intervals.get(key)) for key in HEADLINE_METRICS},
        })
    return {"name": card.get("name", version.version), "version": version.version,
            "alert_threshold": version.alert_threshold,
            "review_threshold": review_threshold(version),
            "metrics": measured}


def export_row(session: Session, image: Image) -> dict:
    return image_result(session, image) | {"stored_path": image.stored_path,
                                           "heatmap_path": image.heatmap_path}


def batch_content(session: Session, batch: Batch, store: Store) -> BatchContent:
    """The batch's summary, hospital, rows and the model that scored it (the active one when
    nothing is scored yet)."""
    images = session.scalars(
        select(Image).where(Image.batch_id == batch.id)
        .options(selectinload(Image.predictions).selectinload(Prediction.model_version))
    ).all()
    rows = sorted((export_row(session, image) for image in images), key=result_order)
    versions = {prediction.model_version for image in images for prediction in image.predictions}
    version = max(versions, key=lambda v: (v.active, v.created_at)) if versions else \
        session.scalar(select(ModelVersion).where(ModelVersion.active))
    hospital = session.get(Hospital, batch.hospital_id)
    return BatchContent(batch_summary(session, batch), hospital.name if hospital else "", rows,
                        model_headline(version), store, isoformat(utcnow()))
