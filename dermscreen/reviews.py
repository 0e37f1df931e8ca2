"""The review loop: dermatologists' decisions as a labelled dataset, and how the model compares.

    export_reviews(session, config, "reviewed/", hospital_id=1)   # reviewed/labels.csv + images/
    dermscreen evaluate --data reviewed/labels.csv                 # re-evaluate on the reviews
    dermscreen train --data reviewed/labels.csv ...                # or retrain with them

Only the latest review of each image counts. A review becomes a training label only when it names
one of the model's nine classes:

* ``melanoma``            -> diagnosis ``melanoma``;
* ``other`` + a diagnosis -> that diagnosis, when it is one of the nine classes;
* ``not_melanoma``        -> no label. "Not melanoma" rules out one class but does not say which of
  the other eight it is, and guessing (say, the model's own top class) would teach the model its
  own answers. These cases go to ``excluded.csv`` with ``melanoma=0`` so that a binary
  melanoma-vs-rest evaluation can still use them;
* ``needs_biopsy``        -> no label yet (``excluded.csv``, ``melanoma`` empty) until the biopsy
  result is entered as a new review.

The export is in the CSV layout that ``dermscreen.training.datasets.read_csv`` reads:
``labels.csv`` with ``image_id, diagnosis, source, split, lesion_id`` (plus the decision, the
reviewer and the model's answer for reference) and the images at ``images/<image_id>.jpg``.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from dermscreen.bundle import MELANOMA
from dermscreen.config import Config
from dermscreen.db.review import Decision, Review
from dermscreen.db.screening import Image, Prediction
from dermscreen.storage import ObjectMissing, Store, store_for
from dermscreen.training.datasets import CLASSES

SOURCE = "dermscreen-review"
LABEL_COLUMNS = ["image_id", "diagnosis", "source", "split", "lesion_id", "decision", "notes",
                 "reviewer_id", "reviewed_at", "model_diagnosis", "model_melanoma_probability",
                 "flagged"]
EXCLUDED_COLUMNS = ["image_id", "decision", "melanoma", "reason", "notes", "reviewer_id",
                    "reviewed_at", "model_diagnosis", "model_melanoma_probability", "flagged"]
JPEG_QUALITY = 95


@dataclass
class ReviewedCase:
    """The latest review of one image, with the image and its latest prediction (if scored)."""

    review: Review
    image: Image
    prediction: Prediction | None


def reviewed_cases(session: Session, hospital_id: int | None = None) -> list[ReviewedCase]:
    """Every reviewed image of ``hospital_id`` (all hospitals when None), oldest review first."""
    query = (select(Review, Image).join(Image, Review.image_id == Image.id)
             .order_by(Review.created_at, Review.id))
    if hospital_id is not None:
        query = query.where(Image.hospital_id == hospital_id)
    latest: dict[str, tuple[Review, Image]] = {}
    for review, image in session.execute(query):
        latest[image.id] = (review, image)
    cases = []
    for review, image in latest.values():
        prediction = session.scalar(
            select(Prediction).where(Prediction.image_id == image.id)
            .order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(1)
        )
        cases.append(ReviewedCase(review, image, prediction))
    return cases


def review_label(review: Review) -> str | None:
    """The training label a review gives, or None (see the module docstring)."""
    if review.decision is Decision.MELANOMA:
        return MELANOMA
    if review.decision is Decision.OTHER and review.diagnosis in CLASSES:
        return review.diagnosis
    return None


def _exclusion(review: Review) -> tuple[str, str]:
    """(melanoma column, reason) for a review that gives no training label."""
    if review.decision is Decision.NOT_MELANOMA:
        return "0", "not melanoma: the other eight classes are not told apart"
    if review.decision is Decision.NEEDS_BIOPSY:
        return "", "awaiting biopsy"
    return "0", f"diagnosis {review.diagnosis!r} is not one of the model's classes"


def _model_columns(case: ReviewedCase) -> dict:
    prediction = case.prediction
    return {
        "model_diagnosis": prediction.diagnosis if prediction else "",
        "model_melanoma_probability": f"{prediction.melanoma_probability:.4f}" if prediction else "",
        "flagged": int(prediction.flagged) if prediction else "",
    }




def _stored_image(store: Store, image: Image) -> io.BytesIO | None:
    """The image's stored pixels (PNG bytes), or None when it has none in the store."""
    if not image.stored_path:
        return None
    try:
        return io.BytesIO(store.read(image.stored_path))
    except ObjectMissing:
        return None


@dataclass
class ExportResult:
    path: Path
    labelled: int
    excluded: int
    missing_images: list[str] = field(default_factory=list)


def export_reviews(session: Session, config: Config, out_dir: str | os.PathLike,
                   hospital_id: int | None = None) -> ExportResult:
    """Write ``labels.csv``, ``excluded.csv`` and ``images/<image_id>.jpg`` under ``out_dir``."""
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir, 0, 0)
    store = store_for(config)
    with open(out_dir / "labels.csv", "w", newline="") as labels_file, \
            open(out_dir / "excluded.csv", "w", newline="") as excluded_file:
        labels = csv.DictWriter(labels_file, LABEL_COLUMNS)
        excluded = csv.DictWriter(excluded_file, EXCLUDED_COLUMNS)
        labels.writeheader()
        excluded.writeheader()
        for case in reviewed_cases(session, hospital_id):
            review, image = case.review, case.image
            common = {"image_id": image.id, "decision": review.decision.value,
                      "notes": review.notes, "reviewer_id": review.reviewer_id,
                      "reviewed_at": review.created_at.isoformat(), **_model_columns(case)}
            label = review_label(review)
            if label is None:
                melanoma, reason = _exclusion(review)
                excluded.writerow({**common, "melanoma": melanoma, "reason": reason})
                result.excluded += 1
                continue
            source = _stored_image(store, image)
            if source is None:
                result.missing_images.append(image.id)
                continue
            with PILImage.open(source) as stored:
                stored.convert("RGB").save(images_dir / f"{image.id}.jpg", "JPEG", quality=JPEG_QUALITY)
            lesion_id = (image.details or {}).get("lesion_id", "")
            labels.writerow({**common, "diagnosis": label, "source": SOURCE, "split": "",
                             "lesion_id": lesion_id})
            result.labelled += 1
    return result


def export_zip(session: Session, config: Config, hospital_id: int | None = None) -> bytes:
    """The export of ``export_reviews`` as a zip archive (folder ``reviewed/`` inside)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "reviewed"
        export_reviews(session, config, folder, hospital_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(scratch).as_posix())
        return buffer.getvalue()


@dataclass
class Agreement:
    """How the model's flags compare with the latest reviews.

    Reviews saying melanoma are positives; not melanoma and other diagnoses are negatives; cases
    awaiting biopsy and images never scored are counted apart and left out of the rates.
    """

    reviewed: int = 0
    true_positives: int = 0   # flagged, reviewed melanoma
    false_positives: int = 0  # flagged, reviewed not melanoma
    true_negatives: int = 0   # not flagged, reviewed not melanoma
    missed: list[ReviewedCase] = field(default_factory=list)  # not flagged, reviewed melanoma
    awaiting_biopsy: int = 0
    unscored: int = 0

    @property
    def false_negatives(self) -> int:
        return len(self.missed)

    @property
    def decided(self) -> int:
        return self.true_positives + self.false_positives + self.true_negatives + self.false_negatives

    @property
    def agreement(self) -> float | None:
        agreeing = self.true_positives + self.true_negatives
        return agreeing / self.decided if self.decided else None

    @property
    def sensitivity(self) -> float | None:
        positives = self.true_positives + self.false_negatives
        return self.true_positives / positives if positives else None

    @property
    def precision(self) -> float | None:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else None


def agreement(session: Session, hospital_id: int | None = None) -> Agreement:
    """Compare each reviewed image's latest prediction flag with its latest review."""
    stats = Agreement()
    for case in reviewed_cases(session, hospital_id):
        stats.reviewed += 1
        if case.review.decision is Decision.NEEDS_BIOPSY:
            stats.awaiting_biopsy += 1
            continue
        if case.prediction is None:
            stats.unscored += 1
            continue
        melanoma = review_label(case.review) == MELANOMA
        if case.prediction.flagged:
            if melanoma:
                stats.true_positives += 1
            else:
                stats.false_positives += 1
        elif melanoma:
            stats.missed.append(case)
        else:
            stats.true_negatives += 1
    return stats
