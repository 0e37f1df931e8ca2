"""The pages through the Flask test client, on SQLite and PostgreSQL: sign-in, roles, tenancy,
batches and results, cases and reviews, alerts, the review loop and the admin pages.

CSRF is switched off here to keep the requests short; tests/web/test_pages_csrf.py switches it on.

    pytest tests/web/test_pages.py -q
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import pytest
from sqlalchemy import select

from dermscreen.db import AuditEntry, Review
from dermscreen.db.alerts import Alert, AlertStatus
from dermscreen.db.screening import Batch, Image, ModelVersion
from dermscreen.db.tenancy import ApiToken, Hospital, Role, User
from dermscreen.storage import store_for
from dermscreen.worker.imagestore import store_image
from tests.conftest import TEST_PASSWORD
from tests.factories import (BLUE, PURPLE, RED, gated_images, image_bytes, lesion_image,
                             make_tiny_bundle)


@pytest.fixture
def pages_app(app):
    app.config["WTF_CSRF_ENABLED"] = False
    return app


@pytest.fixture
def sign_in(pages_app):
    """``sign_in(user) -> client`` signed in as ``user`` through the sign-in form."""

    def login(user, password: str = TEST_PASSWORD):
        client = pages_app.test_client()
        response = client.post("/login", data={"email": user.email, "password": password})
        assert response.status_code == 302, response.text
        return client

    return login


@pytest.fixture
def case(make_scored_batch, make_hospital, sessions, config, tmp_path):
    """A hospital with a scored batch (red flagged + alert, blue not, one failed), stored pixels."""
    hospital = make_hospital()
    made = make_scored_batch(hospital=hospital, scores={"red.jpg": 0.9, "blue.jpg": 0.1, "bad.jpg": None})
    with sessions.begin() as session:
        for image, color in zip(made.images[:2], (RED, BLUE)):
            source = tmp_path / f"{image.original_name}"
            lesion_image(color).save(source)
            stored = store_image(source, store_for(config), config.max_image_pixels)
            row = session.get(Image, image.id)
            row.stored_path, row.width, row.height = stored.ref, stored.width, stored.height
    made.hospital = hospital
    made.red, made.blue, made.bad = made.images
    return made


def audit_actions(sessions, **filters) -> list[str]:
    with sessions() as session:
        return session.scalars(select(AuditEntry.action).filter_by(**filters).order_by(AuditEntry.id)).all()


# --- sign-in ---------------------------------------------------------------------------------

PAGES = ["/", "/batches", "/upload", "/alerts", "/reviews", "/reviews/export.zip", "/admin/",
         "/admin/hospitals", "/admin/users", "/admin/tokens", "/admin/models",
         "/batches/x", "/batches/x/progress", "/cases/x", "/images/x/original"]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_needs_sign_in(pages_app, url):
    response = pages_app.test_client().get(url)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_sign_in_sets_a_protected_session_cookie_and_sign_out_ends_it(pages_app, make_user):
    user = make_user(Role.SUBMITTER)
    client = pages_app.test_client()
    assert client.post("/login", data={"email": user.email, "password": "wrong"}).status_code == 401
    response = client.post("/login", data={"email": user.email.upper(), "password": TEST_PASSWORD})
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/batches").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/batches").status_code == 302


def test_pages_send_security_headers(pages_app, make_user):
    client = pages_app.test_client()
    response = client.get("/login")
    assert "script-src 'self';" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.post("/login", data={"email": "", "password": ""}).status_code == 400


def test_session_cookie_is_secure_when_served_over_https(config, make_user):
    from dermscreen.web import create_app

    config.public_url = "https://dermscreen.example.org"
    app = create_app(config)
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(Role.SUBMITTER)
    response = app.test_client().post("/login", data={"email": user.email, "password": TEST_PASSWORD},
                                      base_url="https://dermscreen.example.org")
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize("target,expected", [("//evil.example/x", "/"), ("/\\evil.example", "/"),
                                             ("https://evil.example/", "/"), ("/alerts?x=1", "/alerts?x=1")])
def test_sign_in_follows_only_local_next(pages_app, make_user, target, expected):
    user = make_user(Role.SUBMITTER)
    response = pages_app.test_client().post("/login", query_string={"next": target},
                                            data={"email": user.email, "password": TEST_PASSWORD})
    assert response.headers["Location"] == expected


# --- roles and tenancy -----------------------------------------------------------------------

def test_roles_limit_the_pages(sign_in, make_user, case):
    submitter = sign_in(make_user(Role.SUBMITTER, hospital=case.hospital))
    assert submitter.get("/alerts").status_code == 403
    assert submitter.get("/admin/").status_code == 403
    assert submitter.post(f"/cases/{case.red.id}/review", data={"decision": "melanoma"}).status_code == 403
    assert submitter.get(f"/batches/{case.batch.id}").status_code == 200
    dermatologist = sign_in(make_user(Role.DERMATOLOGIST, hospital=case.hospital))
    assert dermatologist.get("/admin/users").status_code == 403
    assert dermatologist.get("/alerts").status_code == 200
    admin = sign_in(make_user(Role.ADMIN))
    assert admin.get("/admin/").status_code == 200
    assert admin.get("/upload").status_code == 403  # admins belong to no hospital


def test_another_hospitals_rows_are_404(sign_in, make_user, case, sessions):
    outsider = sign_in(make_user(Role.DERMATOLOGIST))  # a dermatologist of another hospital
    alert = case.alerts[0]
    for url in [f"/cases/{case.red.id}", f"/images/{case.red.id}/original",
                f"/images/{case.red.id}/thumbnail", f"/batches/{case.batch.id}",
                f"/batches/{case.batch.id}/progress", f"/batches/{case.batch.id}/results.csv"]:
        assert outsider.get(url).status_code == 404, url
    for url, data in [(f"/cases/{case.red.id}/review", {"decision": "melanoma"}),
                      (f"/alerts/{alert.id}/acknowledge", {}), (f"/alerts/{alert.id}/resolve", {}),
                      (f"/cases/{case.red.id}/heatmap", {})]:
        assert outsider.post(url, data=data).status_code == 404, url
    assert case.batch.id not in outsider.get("/batches").text
    assert "red.jpg" not in outsider.get("/alerts").text
    with sessions() as session:
        assert session.scalars(select(Review)).all() == []
        assert session.get(Alert, alert.id).status is AlertStatus.PENDING


# --- batches and results -------------------------------------------------------------------

def test_upload_stores_the_batch_and_enqueues_ingest_after_commit(sign_in, make_user, sessions, config):
    user = make_user(Role.SUBMITTER)
    client = sign_in(user)
    assert 'type="file"' in client.get("/upload").text
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.jpg", image_bytes(lesion_image(RED)))
    response = client.post("/upload", data={
        "files": [(io.BytesIO(image_bytes(lesion_image(BLUE))), "blue.jpg"),
                  (io.BytesIO(archive.getvalue()), "more.zip")],
    }, content_type="multipart/form-data")
    assert response.status_code == 303
    batch_id = response.headers["Location"].rsplit("/", 1)[1]
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch.hospital_id == user.hospital_id and batch.submitted_by_user_id == user.id
    queued = [path.read_text() for path in (config.broker_dir / "queue").iterdir()]
    assert any(batch_id in message and "screening.ingest" in message for message in queued)
    page = client.get(f"/batches/{batch_id}")
    assert page.status_code == 200 and "data-progress-url" in page.text
    assert client.get(f"/batches/{batch_id}/progress").json["status"] == "received"


def test_upload_refuses_files_that_are_not_images_or_archives(sign_in, make_user, sessions):
    client = sign_in(make_user(Role.SUBMITTER))
    response = client.post("/upload", data={"files": [(io.BytesIO(b"hello"), "notes.txt")]},
                           content_type="multipart/form-data")
    assert response.status_code == 415
    assert "notes.txt: not a JPEG" in response.text
    with sessions() as session:
        assert session.scalars(select(Batch)).all() == []


def test_batch_page_lists_results_flagged_first_with_bars_and_csv(sign_in, make_user, case, sessions):
    client = sign_in(make_user(Role.SUBMITTER, hospital=case.hospital))
    page = client.get(f"/batches/{case.batch.id}").text
    names = re.findall(r'class="name">([^<]+)<', page)
    assert names == ["red.jpg", "blue.jpg", "bad.jpg"]
    assert 'style="width: 90.0%"' in page and 'style="width: 10.0%"' in page
    assert "not a recognised image file" in page
    assert "data-progress-url" not in page  # finished batches do not poll
    thumbnail = client.get(f"/images/{case.red.id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/jpeg"
    csv_text = client.get(f"/batches/{case.batch.id}/results.csv").text
    assert csv_text.splitlines()[1].startswith(f"{case.red.id},red.jpg,done,0.9,melanoma")
    assert audit_actions(sessions, object_id=case.batch.id) == ["view", "download"]


def test_batch_page_shows_tiers_and_lists_unassessable_images_apart(sign_in, make_user, sessions,
                                                                   config):
    from dermscreen.submissions import submit_batch
    from dermscreen.worker import jobs

    user = make_user(Role.SUBMITTER)
    gated = gated_images()
    uploads = [(name, io.BytesIO(data)) for name, (data, _) in gated.items()]
    uploads += [(name, io.BytesIO(image_bytes(lesion_image(color, seed=seed))))
                for seed, (name, color) in enumerate((("blue.jpg", BLUE), ("red.jpg", RED),
                                                     ("purple.jpg", PURPLE)))]
    with sessions.begin() as session:
        batch_id = submit_batch(session, config, user.hospital_id, uploads).id
    for chunk in jobs.run_ingest(config, batch_id):
        jobs.run_predict_chunk(config, chunk)
    client = sign_in(user)

    page = client.get(f"/batches/{batch_id}").text

    results, unassessable = page.split('id="unassessable-title"')
    assert re.findall(r'class="name">([^<]+)<', results) == ["red.jpg", "purple.jpg", "blue.jpg"]
    assert re.findall(r'<tr class="(\w*)">', results) == ["flagged", "review", ""]
    assert re.findall(r'data-label="Tier"[^>]*>(?:<span class="(?:badge|hint)[^"]*">)?(\w*)',
                      results) == ["alert", "review", "none"]
    assert "done: 7 of 7 images (0 failed, 4 cannot be assessed, 1 flagged)" in page
    assert "Cannot be assessed (4)" in unassessable
    assert re.findall(r'class="name">([^<]+)<', unassessable) == sorted(gated)
    for _, reason in gated.values():
        assert reason in unassessable
    with sessions() as session:
        ids = dict(session.execute(select(Image.original_name, Image.id)
                                   .where(Image.batch_id == batch_id)).all())
    assert client.get(f"/images/{ids['grey.png']}/thumbnail").status_code == 200
    case_page = client.get(f"/cases/{ids['purple.jpg']}").text
    assert '<dt>Tier</dt><dd><span class="badge review">review</span></dd>' in case_page
    assert "<dt>Review threshold</dt><dd>0.200</dd>" in case_page
    assert gated["grey.png"][1] in client.get(f"/cases/{ids['grey.png']}").text
    assert '<td data-label="Cannot be assessed">4</td>' in client.get("/batches").text
    csv_text = client.get(f"/batches/{batch_id}/results.csv").text
    assert [(row["image"], row["tier"], row["status"])
            for row in csv.DictReader(io.StringIO(csv_text))] == [
        ("red.jpg", "alert", "done"), ("purple.jpg", "review", "done"),
        ("blue.jpg", "none", "done"),
        *((name, "", "unassessable") for name in sorted(gated))]


# --- cases, reviews, heatmaps ---------------------------------------------------------------

def test_case_page_shows_scores_model_and_the_review_form(sign_in, make_user, case, sessions):
    client = sign_in(make_user(Role.DERMATOLOGIST, hospital=case.hospital))
    page = client.get(f"/cases/{case.red.id}").text
    assert "red.jpg" in page and "flagged" in page
    assert page.count('class="fill"') == 9  # one bar per class
    with sessions() as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
    assert version.version in page and "0.500" in page
    assert 'name="decision"' in page and 'value="needs_biopsy"' in page
    assert "Compute heatmap" in page  # no heatmap stored yet
    assert audit_actions(sessions, object_id=case.red.id, action="view") == ["view"]


def test_review_is_written_with_an_audit_entry(sign_in, make_user, case, sessions):
    user = make_user(Role.DERMATOLOGIST, hospital=case.hospital)
    client = sign_in(user)
    refused = client.post(f"/cases/{case.blue.id}/review", data={"decision": "other", "diagnosis": ""})
    assert refused.status_code == 400 and "Name the diagnosis" in refused.text
    response = client.post(f"/cases/{case.blue.id}/review",
                           data={"decision": "other", "diagnosis": "nevus", "notes": "regular network"})
    assert response.status_code == 303
    with sessions() as session:
        review = session.scalars(select(Review)).one()
        assert (review.image_id, review.reviewer_id, review.decision.value, review.diagnosis,
                review.notes) == (case.blue.id, user.id, "other", "nevus", "regular network")
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "review")).one()
        assert (entry.user_id, entry.hospital_id, entry.object_id) == (user.id, case.hospital.id, str(review.id))
        assert entry.detail["decision"] == "other"
    assert "regular network" in client.get(f"/cases/{case.blue.id}").text


def test_stored_heatmap_is_shown_behind_a_toggle(sign_in, make_user, case, sessions, config, tiny_bundle):
    from dermscreen.bundle import load_bundle
    from dermscreen.heatmap import render_heatmap

    with sessions.begin() as session:
        image = session.get(Image, case.red.id)
        out = render_heatmap(load_bundle(tiny_bundle), image.stored_path,
                             f"{config.store_dir}/heatmaps/{image.id}.png")
        image.heatmap_path = str(out)
    client = sign_in(make_user(Role.DERMATOLOGIST, hospital=case.hospital))
    page = client.get(f"/cases/{case.red.id}").text
    assert 'type="checkbox" id="show-heatmap"' in page and 'for="show-heatmap">Show Grad-CAM' in page
    assert "Compute heatmap" not in page
    heatmap = client.get(f"/images/{case.red.id}/heatmap")
    assert heatmap.status_code == 200 and heatmap.data.startswith(b"\x89PNG")


def test_compute_heatmap_sends_the_task(sign_in, make_user, case, config):
    client = sign_in(make_user(Role.DERMATOLOGIST, hospital=case.hospital))
    assert client.post(f"/cases/{case.blue.id}/heatmap").status_code == 303
    queued = [path.read_text() for path in (config.broker_dir / "queue").iterdir()]
    assert any("screening.heatmap" in message and case.blue.id in message for message in queued)


# --- alerts ------------------------------------------------------------------------------

def test_alerts_inbox_counts_acknowledges_and_resolves(sign_in, make_user, case, make_scored_batch, sessions):
    second = make_scored_batch(hospital=case.hospital, scores={"late.jpg": 0.8})
    user = make_user(Role.DERMATOLOGIST, hospital=case.hospital)
    client = sign_in(user)
    page = client.get("/alerts").text
    assert re.search(r'data-testid="alert-count">2<', page)
    first_alert, second_alert = case.alerts[0], second.alerts[0]
    response = client.post(f"/alerts/{first_alert.id}/acknowledge", data={"next": f"/cases/{case.red.id}"})
    assert response.status_code == 303 and response.headers["Location"] == f"/cases/{case.red.id}"
    page = client.get("/alerts").text
    assert re.search(r'data-testid="alert-count">1<', page)
    assert page.index("late.jpg") < page.index("red.jpg")  # unacknowledged first
    client.post(f"/alerts/{second_alert.id}/resolve")
    with sessions() as session:
        assert session.get(Alert, first_alert.id).status is AlertStatus.ACKNOWLEDGED
        assert session.get(Alert, first_alert.id).acknowledged_by == user.id
        assert session.get(Alert, second_alert.id).status is AlertStatus.RESOLVED
    assert audit_actions(sessions, user_id=user.id) == [
        "sign_in", "view_alerts", "acknowledge", "view_alerts", "resolve"]


# --- review loop -----------------------------------------------------------------------------

def test_review_loop_page_and_export(sign_in, make_user, case, sessions):
    client = sign_in(make_user(Role.DERMATOLOGIST, hospital=case.hospital))
    client.post(f"/cases/{case.red.id}/review", data={"decision": "melanoma"})
    client.post(f"/cases/{case.blue.id}/review", data={"decision": "melanoma"})  # a missed one
    page = client.get("/reviews").text
    assert re.search(r"Missed melanomas</dt><dd>1<", page)
    assert re.search(r"Agreement</dt><dd>50%<", page)
    export = client.get("/reviews/export.zip")
    with zipfile.ZipFile(io.BytesIO(export.data)) as archive:
        labels = archive.read("reviewed/labels.csv").decode()
        assert f"reviewed/images/{case.blue.id}.jpg" in archive.namelist()
    assert f"{case.red.id},melanoma" in labels and f"{case.blue.id},melanoma" in labels
    assert "export_reviews" in audit_actions(sessions, hospital_id=case.hospital.id)


# --- admin ---------------------------------------------------------------------------------

def test_admin_manages_hospitals_users_tokens_and_models(sign_in, make_user, sessions, tmp_path):
    admin = sign_in(make_user(Role.ADMIN))
    assert admin.post("/admin/hospitals", data={"name": "St Example", "alert_threshold": "0.3"}).status_code == 303
    with sessions() as session:
        hospital = session.scalar(select(Hospital).where(Hospital.name == "St Example"))
        first = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
    # the configured bundle became the active version, and the threshold is set for it
    assert hospital.alert_threshold == pytest.approx(0.3)
    assert hospital.alert_threshold_version_id == first.id
    assert admin.post(f"/admin/hospitals/{hospital.id}", data={
        f"h{hospital.id}-alert_threshold": "1.5"}).status_code == 303
    assert admin.post(f"/admin/hospitals/{hospital.id}", data={
        f"h{hospital.id}-alert_threshold": "0.42"}).status_code == 303
    assert admin.post("/admin/users", data={
        "email": "derm@st.example", "role": "dermatologist", "hospital_id": str(hospital.id),
        "password": "short"}).status_code == 400
    assert admin.post("/admin/users", data={
        "email": "derm@st.example", "role": "dermatologist", "hospital_id": str(hospital.id),
        "password": TEST_PASSWORD, "name": "Dr Derm"}).status_code == 303
    issued = admin.post("/admin/tokens", data={"hospital_id": str(hospital.id), "name": "PACS"})
    plaintext = re.search(r'data-testid="new-token">([^<]+)<', issued.text).group(1)
    assert issued.headers["Cache-Control"] == "no-store"
    assert f'<option selected value="{hospital.id}">St Example</option>' in issued.text  # form ready again
    assert plaintext not in admin.get("/admin/tokens").text  # shown once
    with sessions() as session:
        assert session.get(Hospital, hospital.id).alert_threshold == pytest.approx(0.42)
        assert session.scalar(select(User).where(User.email == "derm@st.example")).hospital_id == hospital.id
        token = session.scalar(select(ApiToken).where(ApiToken.name == "PACS"))
    assert admin.post(f"/admin/tokens/{token.id}/revoke").status_code == 303
    assert admin.post("/admin/models", data={"path": str(second_bundle(tmp_path))}).status_code == 303
    with sessions() as session:
        assert session.get(ApiToken, token.id).revoked_at is not None
        version = session.scalar(select(ModelVersion).where(ModelVersion.version == "test-2"))
        assert not version.active
    assert "stale-threshold" not in admin.get("/admin/hospitals").text
    assert admin.post(f"/admin/models/{version.id}/activate").status_code == 303
    models_page = admin.get("/admin/models").text
    assert "active</span>" in models_page
    # what each version measured, with its intervals; the first bundle recorded nothing
    assert ("<strong>isic2017_test</strong> (600 images, 117 melanomas): melanoma AUC 0.822 (0.772-0.866),"
            " sensitivity 0.744 (0.658-0.814), specificity 0.766 (0.726-0.802)") in models_page
    assert "nothing recorded in the bundle" in models_page
    assert "melanoma AUC n/a, sensitivity n/a, specificity 0.900</li>" in models_page
    with sessions() as session:
        assert session.get(ModelVersion, version.id).active
    # St Example's 0.42 was chosen for the first model: the page says it is not in force
    stale = re.search(r'data-testid="stale-threshold">([^<]+)<', admin.get("/admin/hospitals").text)
    assert "0.420" in stale.group(1) and "test-2 alerts at its own 0.5000" in stale.group(1)
    # the thresholds test-2 measured on validation, to choose from
    points = re.search(r'data-testid="operating-points">(.+?)</table>', admin.get("/admin/hospitals").text, re.S).group(1)
    rows = [re.sub(r"<[^>]+>|\s+", " ", row).split() for row in points.split("<tr>")[2:]]
    assert [row[:3] for row in rows] == [["0.5000", "0.981", "0.476"], ["0.0401", "0.942", "0.697"]]
    assert admin.post(f"/admin/hospitals/{hospital.id}", data={
        f"h{hospital.id}-alert_threshold": "0.42"}).status_code == 303
    assert "stale-threshold" not in admin.get("/admin/hospitals").text
    with sessions() as session:
        assert session.get(Hospital, hospital.id).alert_threshold_version_id == version.id
    assert {"create", "update", "issue", "revoke", "register", "activate"} <= set(audit_actions(sessions))


SECOND_METRICS = {"isic2017_test": {
    "n": 600, "melanomas": 117, "melanoma_auc": 0.8223, "sensitivity": 0.7436, "specificity": 0.766,
    "ci95": {"melanoma_auc": [0.7718, 0.8656], "sensitivity": [0.6576, 0.8141], "specificity": [0.7263, 0.8016]}},
    "no_melanomas": {"n": 20, "melanomas": 0, "melanoma_auc": None, "specificity": 0.9},  # no sensitivity
    "validation": {"n": 1284, "melanomas": 156, "melanoma_auc": 0.901, "sensitivity": 0.981, "specificity": 0.476,
                   "collections_alone": {"threshold": 0.0401, "sensitivity": 0.942, "specificity": 0.697}}}


def second_bundle(tmp_path):
    """The tiny bundle again under another version name, with test metrics recorded."""
    path = make_tiny_bundle(tmp_path / "second")
    metadata = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text(json.dumps({**metadata, "version": "test-2", "metrics": SECOND_METRICS}))
    return path


def test_pages_serve_images_and_heatmaps_from_s3(s3_server, config, make_hospital, make_scored_batch,
                                                 sessions, sign_in, make_user):
    for name, value in s3_server.bucket().items():
        setattr(config, name, value)
    hospital = make_hospital()
    made = make_scored_batch(hospital=hospital, scores={"red.jpg": 0.9})
    source = config.home / "red.png"
    source.write_bytes(image_bytes(lesion_image((200, 40, 40)), "PNG"))
    stored = store_image(source, store_for(config), config.max_image_pixels)
    heatmap = store_for(config).put("heatmaps/red.png", source.read_bytes())
    with sessions.begin() as session:
        row = session.get(Image, made.images[0].id)
        row.stored_path, row.heatmap_path = stored.ref, heatmap
    client = sign_in(make_user(Role.DERMATOLOGIST, hospital=hospital))
    original = client.get(f"/images/{row.id}/original")
    assert original.status_code == 200 and original.data == store_for(config).read(stored.ref)
    assert client.get(f"/images/{row.id}/thumbnail").data.startswith(b"\xff\xd8")
    assert client.get(f"/images/{row.id}/heatmap").data == source.read_bytes()
    with sessions.begin() as session:
        session.get(Image, row.id).heatmap_path = store_for(config).ref("heatmaps/gone.png")
    assert client.get(f"/images/{row.id}/heatmap").status_code == 404
