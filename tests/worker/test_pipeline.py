"""Ingest and inference as plain functions (no broker), on SQLite and PostgreSQL; with the
local store and with S3."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from dermscreen.db import (Alert, Batch, BatchStatus, Channel, Delivery, DeliveryStatus, Image,
                           ImageStatus, ModelVersion, Prediction)
from dermscreen.registry import active_version
from dermscreen.storage import ObjectMissing, S3Store, store_for
from dermscreen.worker import jobs
from dermscreen.worker.heatmap_tasks import run_heatmap
from tests.factories import PURPLE, RED, gated_images, image_bytes, lesion_image
from tests.worker.conftest import blue, hostile_batch, red, zip_bytes


def images_by_name(sessions, batch_id) -> dict[str, Image]:
    with sessions() as session:
        return {image.original_name: image for image in
                session.scalars(select(Image).where(Image.batch_id == batch_id))}


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_ingest_refuses_bad_uploads_with_reasons_and_keeps_good_images(
        sessions, worker_config, make_hospital, submit):
    hospital = make_hospital()
    batch_id = submit(hospital, hostile_batch() | {
        "nested.zip": zip_bytes({"inner.zip": zip_bytes({"deep.jpg": red(9)}), "top.jpg": red(8)})
    }, metadata_csv="image,age,site\nred.jpg,61,back\n"
                                                            "red2,45,arm\n")

    chunks = jobs.run_ingest(worker_config, batch_id)

    images = images_by_name(sessions, batch_id)
    queued = {name for name, image in images.items() if image.status is ImageStatus.QUEUED}
    assert queued == {"red.jpg", "blue.png", "good.zip/lesions/red2.jpg", "nested.zip/top.jpg"}
    errors = {name: image.error for name, image in images.items()
              if image.status is ImageStatus.FAILED}
    assert "outside the archive" in errors.pop("traversal.zip")
    assert "a link" in errors.pop("symlink.tar.gz")
    assert "compression ratio" in errors.pop("bomb.zip")
    assert "decompression bomb" in errors.pop("good.zip/lesions/bomb.png")
    assert "not a recognised image" in errors.pop("good.zip/lesions/notes.jpg")
    assert "corrupt image" in errors.pop("truncated.jpg")
    assert "archive inside an archive" in errors.pop("nested.zip/inner.zip")
    assert errors == {}
    assert max(len(chunk) for chunk in chunks) == 2  # chunk_size 2
    assert {i for chunk in chunks for i in chunk} == {images[name].id for name in queued}
    assert images["red.jpg"].details == {"age": "61", "site": "back"}
    assert images["good.zip/lesions/red2.jpg"].details == {"age": "45", "site": "arm"}
    assert images["blue.png"].details is None
    stored = Path(images["red.jpg"].stored_path)
    assert stored.is_file() and stored.name == f"{images['red.jpg'].content_hash}.jpg"
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        assert (batch.status, batch.total_images, batch.failed_images) == (
            BatchStatus.PROCESSING, 11, 7)
        assert not Path(batch.upload_dir).exists()  # originals (with EXIF) are gone
    assert not list(Path(worker_config.home).rglob("escape.jpg"))

    # A redelivered ingest message finds the batch ingested: it adds and hands out nothing.
    assert jobs.run_ingest(worker_config, batch_id) == []
    assert count(sessions, Image) == 11


def test_members_of_two_archives_with_one_file_name_keep_their_archive_in_every_result(
        sessions, worker_config, make_hospital, make_user, submit):
    from dermscreen.results import batch_results, results_csv
    from dermscreen.worker.notifier import alert_message

    worker_config.smtp_url = "smtp://127.0.0.1:2525"
    hospital = make_hospital()
    make_user("dermatologist", hospital=hospital)
    batch_id = submit(hospital, {"a.zip": zip_bytes({"img001.jpg": red(1)}),
                                 "b.zip": zip_bytes({"img001.jpg": red(2)})},
                      metadata_csv="image,site\nimg001.jpg,back\n")
    for chunk in jobs.run_ingest(worker_config, batch_id):
        jobs.run_predict_chunk(worker_config, chunk)

    with sessions() as session:
        rows = batch_results(session, session.get(Batch, batch_id))
        assert sorted(row["image"] for row in rows) == ["a.zip/img001.jpg", "b.zip/img001.jpg"]
        assert all(row["flagged"] for row in rows)
        csv_names = sorted(line.split(",")[1] for line in results_csv(rows).splitlines()[1:])
        assert csv_names == ["a.zip/img001.jpg", "b.zip/img001.jpg"]
        messages = [alert_message(session, worker_config, delivery)
                    for delivery in session.scalars(select(Delivery))]
        assert sorted(message["image"] for message in messages) == [
            "a.zip/img001.jpg", "b.zip/img001.jpg"]
    images = images_by_name(sessions, batch_id)
    assert {name: image.details for name, image in images.items()} == {
        "a.zip/img001.jpg": {"site": "back"}, "b.zip/img001.jpg": {"site": "back"}}


def test_predict_scores_flags_alerts_and_completes_the_batch(
        sessions, worker_config, make_hospital, make_user, submit):
    worker_config.smtp_url = "smtp://127.0.0.1:2525"
    hospital = make_hospital(webhook_url="https://hooks.example.org/alerts")
    derm = make_user("dermatologist", hospital=hospital)
    make_user("submitter", hospital=hospital)  # submitters get no alerts
    make_user("dermatologist")  # another hospital's dermatologist gets none either
    batch_id = submit(hospital, {"red.jpg": red(), "blue.png": blue(), "bad.jpg": b"nope"})
    chunks = jobs.run_ingest(worker_config, batch_id)

    outcomes = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]

    images = images_by_name(sessions, batch_id)
    assert [o.flagged_image_ids for o in outcomes if o.flagged_image_ids] == [[images["red.jpg"].id]]
    with sessions() as session:
        predictions = {p.image_id: p for p in session.scalars(select(Prediction))}
        red_score = predictions[images["red.jpg"].id]
        blue_score = predictions[images["blue.png"].id]
        assert red_score.flagged and red_score.diagnosis == "melanoma"
        assert red_score.melanoma_probability >= 0.5 > blue_score.melanoma_probability
        assert not blue_score.flagged and blue_score.diagnosis == "nevus"
        assert abs(sum(red_score.probabilities.values()) - 1) < 1e-5
        alert = session.scalars(select(Alert)).one()
        assert (alert.image_id, alert.hospital_id) == (images["red.jpg"].id, hospital.id)
        deliveries = {(d.channel, d.target, d.recipient_id) for d in session.scalars(select(Delivery))}
        assert deliveries == {(Channel.EMAIL, derm.email, derm.id),
                              (Channel.WEBHOOK, "https://hooks.example.org/alerts", None)}
        assert sorted(i for o in outcomes for i in o.delivery_ids) == sorted(
            d.id for d in session.scalars(select(Delivery)))
        batch = session.get(Batch, batch_id)
        assert (batch.status, batch.done_images, batch.failed_images, batch.flagged_images) == (
            BatchStatus.DONE, 2, 1, 1)
        assert batch.completed_at is not None


def test_a_redone_chunk_doubles_nothing(sessions, worker_config, make_hospital, make_user, submit):
    worker_config.smtp_url = "smtp://127.0.0.1:2525"
    hospital = make_hospital()
    make_user("dermatologist", hospital=hospital)
    batch_id = submit(hospital, {"red.jpg": red(), "red2.jpg": red(2), "blue.png": blue()})
    chunks = jobs.run_ingest(worker_config, batch_id)
    first = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]
    before = [count(sessions, model) for model in (Prediction, Alert, Delivery)]

    again = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]

    assert sum(o.done for o in first) == 3 and sum(o.done for o in again) == 0
    # Nothing new, but the unsent follow-ups of the first run are handed out again, in case it
    # died between its commit and its messages.
    assert sorted(i for o in again for i in o.delivery_ids) == sorted(
        i for o in first for i in o.delivery_ids)
    assert sorted(i for o in again for i in o.flagged_image_ids) == sorted(
        i for o in first for i in o.flagged_image_ids)
    assert [count(sessions, model) for model in (Prediction, Alert, Delivery)] == before == [3, 2, 2]
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        assert (batch.done_images, batch.flagged_images, batch.status) == (3, 2, BatchStatus.DONE)
    # Once sent (or claimed, or heatmapped), a rerun hands out nothing.
    for outcome in first:
        for delivery_id in outcome.delivery_ids:
            with sessions.begin() as session:
                session.get(Delivery, delivery_id).status = DeliveryStatus.SENT
        for image_id in outcome.flagged_image_ids:
            with sessions.begin() as session:
                session.get(Image, image_id).heatmap_path = "/drawn.png"
    third = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]
    assert not any(o.delivery_ids or o.flagged_image_ids or o.done for o in third)


def test_hospital_threshold_overrides_the_bundle_for_its_model_version(
        sessions, worker_config, make_hospital, submit):
    with sessions.begin() as session:
        version = active_version(session, worker_config)  # the tiny bundle: threshold 0.5
        older = ModelVersion(version="older", path="/nowhere", classes=[], alert_threshold=0.5, card={})
        session.add(older)
    strict = make_hospital(alert_threshold=0.99, version=version)
    lax = make_hospital(alert_threshold=0.001, version=version)
    stale = make_hospital(alert_threshold=0.001, version=older)  # chosen for another model
    for hospital in (strict, lax, stale):
        batch_id = submit(hospital, {"red.jpg": red(), "blue.png": blue()})
        for chunk in jobs.run_ingest(worker_config, batch_id):
            jobs.run_predict_chunk(worker_config, chunk)
    with sessions() as session:
        flagged = {(p.image.hospital_id, p.image.original_name):
                   (p.flagged, p.tier, p.threshold, p.review_threshold)
                   for p in session.scalars(select(Prediction))}
    # The hospital's threshold moves the alert tier; the review tier's threshold is the model's.
    assert flagged == {
        (strict.id, "red.jpg"): (False, "review", 0.99, 0.2),
        (strict.id, "blue.png"): (False, "none", 0.99, 0.2),
        (lax.id, "red.jpg"): (True, "alert", 0.001, 0.2),
        (lax.id, "blue.png"): (True, "alert", 0.001, 0.2),
        (stale.id, "red.jpg"): (True, "alert", 0.5, 0.2),
        (stale.id, "blue.png"): (False, "none", 0.5, 0.2)}


def test_the_gate_stops_unusable_images_without_prediction_tier_or_alert(
        sessions, worker_config, make_hospital, submit):
    hospital = make_hospital(webhook_url="https://hooks.example.org/alerts")
    gated = gated_images()
    batch_id = submit(hospital, {name: data for name, (data, _) in gated.items()}
                      | {"red.jpg": red(), "purple.jpg": image_bytes(lesion_image(PURPLE))})
    chunks = jobs.run_ingest(worker_config, batch_id)

    outcomes = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]

    assert (sum(o.done for o in outcomes), sum(o.unassessable for o in outcomes),
            sum(o.failed for o in outcomes)) == (2, 4, 0)
    images = images_by_name(sessions, batch_id)
    assert {name: (images[name].status, images[name].error) for name in gated} == {
        name: (ImageStatus.UNASSESSABLE, reason) for name, (_, reason) in gated.items()}
    with sessions() as session:
        tiers = {p.image.original_name: (p.tier, p.flagged)
                 for p in session.scalars(select(Prediction))}
        assert tiers == {"red.jpg": ("alert", True), "purple.jpg": ("review", False)}
        assert session.scalars(select(Alert.image_id)).all() == [images["red.jpg"].id]
        batch = session.get(Batch, batch_id)
        assert (batch.status, batch.done_images, batch.failed_images, batch.unassessable_images,
                batch.flagged_images) == (BatchStatus.DONE, 2, 0, 4, 1)

    again = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]
    assert not any(o.done or o.unassessable for o in again)
    with sessions() as session:
        assert session.get(Batch, batch_id).unassessable_images == 4


def test_an_image_lost_from_the_store_fails_with_a_reason(sessions, worker_config, make_hospital,
                                                          submit):
    batch_id = submit(make_hospital(), {"red.jpg": red(), "blue.png": blue()})
    (chunk,) = jobs.run_ingest(worker_config, batch_id)
    Path(images_by_name(sessions, batch_id)["red.jpg"].stored_path).unlink()
    outcome = jobs.run_predict_chunk(worker_config, chunk)
    assert (outcome.done, outcome.failed) == (1, 1)
    images = images_by_name(sessions, batch_id)
    assert images["red.jpg"].status is ImageStatus.FAILED
    assert "unreadable in store" in images["red.jpg"].error
    with sessions() as session:
        assert session.get(Batch, batch_id).status is BatchStatus.DONE


def test_stored_images_carry_no_metadata(sessions, worker_config, make_hospital, submit):
    exif = PILImage.Exif()
    exif[0x010F] = "CameraMaker"
    data = image_bytes(lesion_image(RED), exif=exif.tobytes())
    batch_id = submit(make_hospital(), {"exif.jpg": data})
    jobs.run_ingest(worker_config, batch_id)
    stored = Path(images_by_name(sessions, batch_id)["exif.jpg"].stored_path)
    assert b"CameraMaker" in data and b"CameraMaker" not in stored.read_bytes()


def test_a_batch_runs_through_s3_and_writes_nothing_locally(
        s3_server, sessions, worker_config, make_hospital, submit, tmp_path):
    for name, value in s3_server.bucket().items():
        setattr(worker_config, name, value)
    store = store_for(worker_config)
    assert isinstance(store, S3Store)
    batch_id = submit(make_hospital(), {"lesions.zip": zip_bytes({"red.jpg": red(), "blue.jpg": blue()}),
                                        "bad.jpg": b"\xff\xd8\xff not really"},
                      metadata_csv="image,age\nred.jpg,50\n")
    with sessions() as session:
        upload_dir = session.get(Batch, batch_id).upload_dir
    assert upload_dir.startswith(worker_config.store_url + "/uploads/")
    manifest = json.loads(store.read(f"{upload_dir}/manifest.json"))
    assert [entry["name"] for entry in manifest["files"]] == ["lesions.zip", "bad.jpg"]

    chunks = jobs.run_ingest(worker_config, batch_id)
    outcomes = [jobs.run_predict_chunk(worker_config, chunk) for chunk in chunks]

    assert sum(outcome.done for outcome in outcomes) == 2
    with sessions() as session:
        images = {image.original_name: image for image in
                  session.scalars(select(Image).where(Image.batch_id == batch_id))}
        assert session.get(Batch, batch_id).status is BatchStatus.DONE
    assert images["bad.jpg"].status is ImageStatus.FAILED
    assert images["lesions.zip/red.jpg"].details == {"age": "50"}
    stored = images["lesions.zip/red.jpg"].stored_path
    assert stored.startswith(worker_config.store_url + "/images/")
    with PILImage.open(io.BytesIO(store.read(stored))) as pixels:
        assert pixels.format == "JPEG"
    with pytest.raises(ObjectMissing):  # the originals are deleted after ingest
        store.read(f"{upload_dir}/manifest.json")
    (flagged,) = [i for outcome in outcomes for i in outcome.flagged_image_ids]
    heatmap = run_heatmap(worker_config, flagged)
    assert heatmap.startswith(worker_config.store_url + "/heatmaps/")
    assert store.read(heatmap).startswith(b"\x89PNG")
    # Nothing went to the store directory; the home holds only the database and scratch space.
    assert not (tmp_path / "store").exists()
    assert not [p for p in (worker_config.home / "work").rglob("*") if p.is_file()]
