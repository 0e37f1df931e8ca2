"""Reading back over the API: batch progress, results (JSON and CSV), one image, alerts."""

import csv
import io
import subprocess
import sys

import pytest
from sqlalchemy import select

from dermscreen.db import Alert, AlertStatus, AuditEntry, Batch, ModelVersion, Prediction
from dermscreen.results import RESULT_COLUMNS
from tests.factories import BLUE, PURPLE, RED, gated_images, image_bytes, lesion_image


def auth(plaintext: str) -> dict:
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def scored(make_hospital, make_token, make_scored_batch):
    hospital = make_hospital()
    token, plaintext = make_token(hospital)
    made = make_scored_batch(hospital, {"b.jpg": 0.2, "a.jpg": 0.97, "broken.jpg": None,
                                        "c.jpg": 0.6, "d.jpg": 0.05}, review_threshold=0.15)
    made.token, made.headers = token, auth(plaintext)
    return made


def test_batch_progress_comes_from_the_counters(client, sessions, scored):
    url = f"/api/v1/batches/{scored.batch.id}"
    body = client.get(url, headers=scored.headers).json
    assert body["status"] == "done"
    assert body["counts"] == {"total": 5, "done": 4, "failed": 1, "unassessable": 0, "flagged": 2,
                              "pending": 0}
    assert body["progress"] == 1.0
    with sessions.begin() as session:  # the worker has only finished 2 of 5
        batch = session.get(Batch, scored.batch.id)
        batch.done_images, batch.failed_images, batch.flagged_images = 1, 1, 1
    body = client.get(url, headers=scored.headers).json
    assert body["counts"]["pending"] == 3 and body["progress"] == 0.4


def test_results_json_lists_by_tier_then_by_probability(client, scored):
    response = client.get(f"/api/v1/batches/{scored.batch.id}/results", headers=scored.headers)
    assert response.status_code == 200
    rows = response.json["results"]
    assert [row["image"] for row in rows] == ["a.jpg", "c.jpg", "b.jpg", "d.jpg", "broken.jpg"]
    assert [(row["tier"], row["flagged"]) for row in rows] == [
        ("alert", True), ("alert", True), ("review", False), ("none", False), (None, False)]
    assert all(set(row) == set(RESULT_COLUMNS) for row in rows)
    top = rows[0]
    assert top["flagged"] is True and top["diagnosis"] == "melanoma"
    assert top["melanoma_probability"] == pytest.approx(0.97)
    assert sum(top["probabilities"].values()) == pytest.approx(1.0)
    broken = rows[-1]
    assert broken["status"] == "failed" and broken["error"] == "not a recognised image file"
    assert broken["melanoma_probability"] is None and broken["flagged"] is False
    assert response.json["batch"]["id"] == scored.batch.id


@pytest.mark.parametrize("query, headers", [("?format=csv", {}), ("", {"Accept": "text/csv"})])
def test_results_csv(client, scored, query, headers):
    response = client.get(f"/api/v1/batches/{scored.batch.id}/results{query}",
                          headers=scored.headers | headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["image"] for row in rows] == ["a.jpg", "c.jpg", "b.jpg", "d.jpg", "broken.jpg"]
    assert rows[0]["flagged"] == "True" and float(rows[0]["probability_melanoma"]) == 0.97
    assert [(row["tier"], row["flagged"]) for row in rows] == [
        ("alert", "True"), ("alert", "True"), ("review", "False"), ("none", "False"), ("", "False")]
    assert list(rows[0])[:8] == [column for column in RESULT_COLUMNS if column != "probabilities"]
    assert "probability_basal_cell_carcinoma" in rows[0]
    assert rows[-1]["status"] == "failed" and rows[-1]["melanoma_probability"] == ""


def test_results_format_must_be_known(client, scored):
    response = client.get(f"/api/v1/batches/{scored.batch.id}/results?format=xml",
                          headers=scored.headers)
    assert response.status_code == 400 and "json, csv, fhir, pdf, html, sr" in response.json["reason"]


def test_results_prefer_the_active_model_versions_prediction(client, sessions, scored):
    image = scored.images[1]  # a.jpg, 0.97 by the active version
    with sessions.begin() as session:
        old = ModelVersion(version="old", path="/old", classes=["melanoma", "nevus"],
                           alert_threshold=0.5, card={}, active=False)
        session.add(old)
        session.flush()
        session.add(Prediction(image_id=image.id, model_version_id=old.id,
                               probabilities={"melanoma": 0.1, "nevus": 0.9},
                               melanoma_probability=0.1, diagnosis="nevus", threshold=0.5,
                               review_threshold=0.5, tier="none", flagged=False))
    body = client.get(f"/api/v1/images/{image.id}", headers=scored.headers).json
    assert body["melanoma_probability"] == pytest.approx(0.97)
    assert body["model_version"] != "old"


def test_one_image_result_is_returned_and_the_view_audited(client, sessions, scored):
    image = scored.images[1]
    response = client.get(f"/api/v1/images/{image.id}", headers=scored.headers)
    assert response.status_code == 200
    body = response.json
    assert body["image_id"] == image.id and body["image"] == "a.jpg"
    assert body["batch_id"] == scored.batch.id and body["threshold"] == 0.5
    assert body["flagged"] is True and body["tier"] == "alert" and body["review_threshold"] == 0.15
    client.get(f"/api/v1/batches/{scored.batch.id}/results", headers=scored.headers)
    with sessions() as session:
        views = session.scalars(select(AuditEntry).where(AuditEntry.action == "view")
                                .order_by(AuditEntry.id)).all()
    assert [(entry.object_type, entry.object_id) for entry in views] == [
        ("Image", image.id), ("Batch", scored.batch.id)]
    assert all(entry.token_id == scored.token.id for entry in views)


def test_alerts_list_and_status_filter(client, sessions, scored):
    alerts = client.get("/api/v1/alerts", headers=scored.headers).json["alerts"]
    assert sorted(alert["image"] for alert in alerts) == ["a.jpg", "c.jpg"]
    assert {alert["status"] for alert in alerts} == {"pending"}
    assert alerts[0]["batch_id"] == scored.batch.id
    assert client.get("/api/v1/alerts?status=resolved",
                      headers=scored.headers).json["alerts"] == []
    bad = client.get("/api/v1/alerts?status=done", headers=scored.headers)
    assert bad.status_code == 400 and "pending" in bad.json["reason"]
    assert client.get("/api/v1/alerts?limit=0", headers=scored.headers).status_code == 400
    assert len(client.get("/api/v1/alerts?limit=1",
                          headers=scored.headers).json["alerts"]) == 1
    with sessions() as session:  # every answered listing is audited, refused ones are not
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "view_alerts")
                                  .order_by(AuditEntry.id)).all()
    assert [(e.detail["status"], e.detail["shown"]) for e in entries] == [
        (None, 2), ("resolved", 0), (None, 1)]
    assert all(e.token_id == scored.token.id for e in entries)


def test_acknowledge_then_resolve_an_alert_with_audit_entries(client, sessions, scored):
    alert_id = scored.alerts[0].id
    url = f"/api/v1/alerts/{alert_id}"
    first = client.post(f"{url}/acknowledge", headers=scored.headers)
    assert first.status_code == 200 and first.json["status"] == "acknowledged"
    assert first.json["acknowledged_at"] is not None
    again = client.post(f"{url}/acknowledge", headers=scored.headers)
    assert again.json["acknowledged_at"] == first.json["acknowledged_at"]  # unchanged
    resolved = client.post(f"{url}/resolve", headers=scored.headers)
    assert resolved.status_code == 200 and resolved.json["status"] == "resolved"

    listed = client.get("/api/v1/alerts?status=resolved", headers=scored.headers).json["alerts"]
    assert [alert["id"] for alert in listed] == [alert_id]
    with sessions() as session:
        assert session.get(Alert, alert_id).status is AlertStatus.RESOLVED
        entries = session.scalars(select(AuditEntry).where(AuditEntry.object_type == "Alert")
                                  .order_by(AuditEntry.id)).all()
    assert [(entry.action, entry.object_id) for entry in entries] == [
        ("acknowledge", str(alert_id)), ("resolve", str(alert_id))]
    assert all(entry.token_id == scored.token.id for entry in entries)
    assert client.post("/api/v1/alerts/999999/resolve", headers=scored.headers).status_code == 404


def test_the_web_app_does_not_import_tensorflow(config):
    code = ("import sys; from dermscreen.config import Config; from dermscreen.web import "
            f"create_app; create_app(Config(home={str(config.home)!r}, "
            f"database_url={config.database_url!r})); print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_gated_images_and_tiers_through_the_api(client, config, sessions, make_hospital,
                                                 make_token, monkeypatch):
    """Submitted over the API and screened by the worker's jobs: the images the gate stops are
    unassessable with their reason and counted apart; the others come with their tier."""
    from dermscreen.worker import jobs

    monkeypatch.setattr("dermscreen.web.api.batches.enqueue_ingest", lambda config, batch_id: None)
    hospital = make_hospital(webhook_url="https://hooks.example.org/alerts")
    _, plaintext = make_token(hospital)
    gated = gated_images()
    lesions = {"red.jpg": lesion_image(RED), "purple.jpg": lesion_image(PURPLE, seed=1),
               "blue.jpg": lesion_image(BLUE, seed=2)}
    files = [(io.BytesIO(data), name) for name, (data, _) in gated.items()]
    files += [(io.BytesIO(image_bytes(image)), name) for name, image in lesions.items()]
    response = client.post("/api/v1/batches", data={"files": files}, headers=auth(plaintext),
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.json
    batch_id = response.json["id"]
    for chunk in jobs.run_ingest(config, batch_id):
        jobs.run_predict_chunk(config, chunk)

    summary = client.get(f"/api/v1/batches/{batch_id}", headers=auth(plaintext)).json
    assert summary["status"] == "done" and summary["progress"] == 1.0
    assert summary["counts"] == {"total": 7, "done": 3, "failed": 0, "unassessable": 4,
                                 "flagged": 1, "pending": 0}
    body = client.get(f"/api/v1/batches/{batch_id}/results", headers=auth(plaintext)).json
    assert body["batch"] == summary
    rows = {row["image"]: row for row in body["results"]}
    assert [row["image"] for row in body["results"]] == [
        "red.jpg", "purple.jpg", "blue.jpg", *sorted(gated)]
    for name, (_, reason) in gated.items():
        assert (rows[name]["status"], rows[name]["error"], rows[name]["tier"],
                rows[name]["melanoma_probability"], rows[name]["probabilities"],
                rows[name]["flagged"]) == ("unassessable", reason, None, None, None, False)
    assert [(rows[name]["tier"], rows[name]["flagged"]) for name in lesions] == [
        ("alert", True), ("review", False), ("none", False)]

    text = client.get(f"/api/v1/batches/{batch_id}/results?format=csv",
                      headers=auth(plaintext)).get_data(as_text=True)
    by_name = {row["image"]: row for row in csv.DictReader(io.StringIO(text))}
    assert {name: (row["status"], row["tier"], row["flagged"], row["error"])
            for name, row in by_name.items()} == {
        "red.jpg": ("done", "alert", "True", ""), "purple.jpg": ("done", "review", "False", ""),
        "blue.jpg": ("done", "none", "False", ""),
        **{name: ("unassessable", "", "False", reason) for name, (_, reason) in gated.items()}}
    assert all(by_name[name]["melanoma_probability"] == "" for name in gated)
    assert float(by_name["red.jpg"]["melanoma_probability"]) >= 0.5
    assert 0.2 <= float(by_name["purple.jpg"]["melanoma_probability"]) < 0.5

    one = client.get(f"/api/v1/images/{rows['grey.png']['image_id']}", headers=auth(plaintext)).json
    assert (one["status"], one["error"], one["tier"], one["threshold"]) == (
        "unassessable", gated["grey.png"][1], None, None)
    purple = client.get(f"/api/v1/images/{rows['purple.jpg']['image_id']}",
                        headers=auth(plaintext)).json
    assert (purple["tier"], purple["threshold"], purple["review_threshold"]) == ("review", 0.5, 0.2)
    alerts = client.get("/api/v1/alerts", headers=auth(plaintext)).json["alerts"]
    assert [alert["image"] for alert in alerts] == ["red.jpg"]  # only the alert tier alerts
