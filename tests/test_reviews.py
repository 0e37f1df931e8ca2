"""Review export in the training layout, and model-vs-review agreement."""

from __future__ import annotations

import io
import zipfile

import pytest

from dermscreen import reviews
from dermscreen.db.review import Decision, Review
from dermscreen.db.screening import Batch, Image, ImageStatus, ModelVersion, Prediction
from dermscreen.storage import store_for
from dermscreen.training.datasets import read_csv
from dermscreen.worker.imagestore import store_image
from tests.factories import BLUE, RED, lesion_image


@pytest.fixture
def scored(sessions, config, tmp_path, make_hospital, make_user):
    """``scored(color, flagged, decision, diagnosis=None, hospital=None) -> image id``."""
    hospital = make_hospital()
    reviewer = make_user(hospital=hospital)
    with sessions.begin() as session:
        version = ModelVersion(version="test-1", path="x", classes=[], alert_threshold=0.5,
                               card={}, active=True)
        batch = Batch(hospital_id=hospital.id, upload_dir=str(tmp_path))
        session.add_all([version, batch])
        session.flush()
        ids = {"version": version.id, "batch": batch.id}

    def make(color, flagged, decision, diagnosis=None, seed=0):
        source = tmp_path / f"source-{seed}.jpg"
        lesion_image(color, seed=seed).save(source)
        stored = store_image(source, store_for(config), config.max_image_pixels)
        with sessions.begin() as session:
            image = Image(batch_id=ids["batch"], hospital_id=hospital.id, original_name=source.name,
                          content_hash=stored.content_hash, stored_path=stored.ref,
                          status=ImageStatus.DONE)
            session.add(image)
            session.flush()
            probability = 0.9 if flagged else 0.1
            session.add(Prediction(image_id=image.id, model_version_id=ids["version"],
                                   probabilities={"melanoma": probability},
                                   melanoma_probability=probability,
                                   diagnosis="melanoma" if flagged else "nevus", threshold=0.5,
                                   review_threshold=0.5, tier="alert" if flagged else "none",
                                   flagged=flagged))
            if decision is not None:
                session.add(Review(image_id=image.id, reviewer_id=reviewer.id,
                                   decision=Decision(decision), diagnosis=diagnosis, notes="seen"))
            return image.id

    make.hospital = hospital
    return make


def test_export_writes_labels_the_training_reader_accepts(scored, sessions, config, tmp_path):
    melanoma = scored(RED, True, "melanoma", seed=1)
    nevus = scored(BLUE, False, "other", "nevus", seed=2)
    not_melanoma = scored(BLUE, True, "not_melanoma", seed=3)
    biopsy = scored(RED, True, "needs_biopsy", seed=4)
    scored(BLUE, False, None, seed=5)  # never reviewed: not exported
    with sessions() as session:
        result = reviews.export_reviews(session, config, tmp_path / "out", scored.hospital.id)
    assert (result.labelled, result.excluded, result.missing_images) == (2, 2, [])
    records = read_csv(tmp_path / "out" / "labels.csv")
    assert dict(zip(records["image_id"], records["label"])) == {melanoma: "melanoma", nevus: "nevus"}
    assert all((tmp_path / "out" / "images" / f"{image_id}.jpg").is_file() for image_id in records["image_id"])
    excluded = (tmp_path / "out" / "excluded.csv").read_text()
    assert f"{not_melanoma},not_melanoma,0," in excluded
    assert f"{biopsy},needs_biopsy,," in excluded


def test_latest_review_wins_and_other_hospitals_are_not_exported(scored, sessions, config,
                                                                 make_user, tmp_path):
    image_id = scored(RED, True, "not_melanoma", seed=1)
    second = make_user(hospital=scored.hospital)
    with sessions.begin() as session:
        session.add(Review(image_id=image_id, reviewer_id=second.id, decision=Decision.MELANOMA))
    with sessions() as session:
        archive = reviews.export_zip(session, config, scored.hospital.id)
        other = reviews.export_reviews(session, config, tmp_path / "other", hospital_id=10_000)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        names = set(opened.namelist())
        labels = opened.read("reviewed/labels.csv").decode()
    assert f"reviewed/images/{image_id}.jpg" in names
    assert f"{image_id},melanoma," in labels
    assert (other.labelled, other.excluded) == (0, 0)


def test_agreement_counts_missed_melanomas(scored, sessions):
    scored(RED, True, "melanoma", seed=1)                 # true positive
    missed = scored(RED, False, "melanoma", seed=2)       # missed melanoma
    scored(BLUE, True, "not_melanoma", seed=3)            # false alarm
    scored(BLUE, False, "other", "nevus", seed=4)         # true negative
    scored(BLUE, False, "needs_biopsy", seed=5)           # left out
    with sessions() as session:
        stats = reviews.agreement(session, scored.hospital.id)
    assert (stats.reviewed, stats.decided, stats.awaiting_biopsy) == (5, 4, 1)
    assert (stats.true_positives, stats.false_positives, stats.true_negatives) == (1, 1, 1)
    assert [case.image.id for case in stats.missed] == [missed]
    assert stats.agreement == pytest.approx(0.5)
    assert stats.sensitivity == pytest.approx(0.5)
    assert stats.precision == pytest.approx(0.5)


def test_dermscreen_evaluate_reads_the_export(scored, sessions, config, tmp_path):
    """The review loop closes: the exported folder is a dataset ``dermscreen evaluate`` scores."""
    import json

    from click.testing import CliRunner

    from dermscreen.cli import main

    for seed in range(3):
        scored(RED, True, "melanoma", seed=seed)
        scored(BLUE, False, "other", "nevus", seed=10 + seed)
    with sessions() as session:
        reviews.export_reviews(session, config, tmp_path / "reviewed", scored.hospital.id)
    result = CliRunner().invoke(main, ["evaluate", "--model", config.model_bundle,
                                       "--data", str(tmp_path / "reviewed" / "labels.csv"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert (report["n"], report["melanomas"], report["missed_melanomas"]) == (6, 3, 0)
    assert report["sensitivity"] == 1.0  # the tiny bundle calls red images melanoma
