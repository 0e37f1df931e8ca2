"""An admin picks a hospital's alert threshold from the active version's validation curve
(``/admin/hospitals/<id>/threshold``), on SQLite and PostgreSQL; and the curve's pieces
(``dermscreen.web.admin.curve``) on their own.

    pytest tests/web/test_admin_thresholds.py -q
"""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from sqlalchemy import select

from dermscreen.bundle import write_metadata
from dermscreen.config import Config
from dermscreen.db import AuditEntry
from dermscreen.db.screening import ModelVersion
from dermscreen.db.tenancy import Hospital, Role
from dermscreen.web.admin.curve import Mark, choices, curve_svg, read_off
from tests.conftest import TEST_PASSWORD
from tests.factories import CLASSES, make_tiny_bundle

SHIPPED, REVIEW = 0.1, 0.03  # the curve bundle's alert and review thresholds (between curve points)


def synthetic_curve(images: int = 2000, melanomas: int = 220, points: int = 160) -> dict:
    """An ``operating_curve`` as training writes it, from made-up validation scores: thresholds
    at evenly spread ranks of the scores, by rising threshold."""
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(-1.0, 1.5, melanomas), rng.normal(-4.0, 1.5, images - melanomas)])
    score, positive = 1 / (1 + np.exp(-logits)), np.arange(images) < melanomas
    thresholds = np.unique(np.quantile(score, np.linspace(0.0, 1.0, points)))
    return {"data": f"validation fold: {images} images, {melanomas} melanomas",
            "points": [{"threshold": float(t), "sensitivity": float((score[positive] >= t).mean()),
                        "specificity": float((score[~positive] < t).mean()),
                        "alert_share": float((score >= t).mean())} for t in thresholds]}


def make_curve_bundle(path, version: str = "test-curve"):
    """The tiny bundle with a review tier and a validation curve in its metadata."""
    path = make_tiny_bundle(path, threshold=SHIPPED)
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["version"] = version
    metadata["output"]["review_threshold"] = REVIEW
    metadata["operating_curve"] = synthetic_curve()
    write_metadata(path, metadata)
    return path


@pytest.fixture(scope="module")
def curve_bundle(tmp_path_factory):
    return make_curve_bundle(tmp_path_factory.mktemp("bundles") / "curve")


@pytest.fixture
def curve_config(tmp_path, db_url, curve_bundle) -> Config:
    return Config(home=tmp_path, database_url=db_url, model_bundle=str(curve_bundle),
                  secret_key="test-secret-key")


@pytest.fixture
def admin(request, make_user):
    """``admin(config) -> client``: an admin signed in on an app (CSRF off) with ``config``."""
    from dermscreen.web import create_app

    def sign_in(config):
        app = create_app(config)
        app.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
        client = app.test_client()
        user = make_user(Role.ADMIN)
        assert client.post("/login", data={"email": user.email, "password": TEST_PASSWORD}).status_code == 302
        return client

    return sign_in


POINTS = synthetic_curve()["points"]


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", page))).strip()


def choice_rows(page: str) -> list[dict]:
    """The table's rows: threshold, the three measures (as shown), marks, the button's value."""
    table = re.search(r'data-testid="threshold-choices">(.+?)</table>', page, re.S).group(1)
    rows = []
    for row in re.findall(r"<tr[^>]*>(.+?)</tr>", table, re.S)[1:]:
        cells = [text_of(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        button = re.search(r'name="alert_threshold" value="([^"]*)"', row)
        rows.append({"threshold": cells[0], "sensitivity": cells[1], "specificity": cells[2],
                     "alerted": cells[3], "marks": cells[4], "choose": cells[5],
                     "value": button.group(1) if button else None})
    return rows


def percent(value: float) -> str:
    return "%.1f%%" % (value * 100)


# --- the page ------------------------------------------------------------------------------

def test_page_draws_the_curve_with_the_shipped_and_review_thresholds(admin, curve_config, make_hospital):
    client = admin(curve_config)
    hospital = make_hospital("St Curve")
    page = client.get(f"/admin/hospitals/{hospital.id}/threshold").text
    svg = re.search(r'<svg class="curve".+?</svg>', page, re.S).group(0)
    lines = re.findall(r'<polyline class="line (\w+)" points="([^"]+)"', svg)
    assert [name for name, _ in lines] == ["sensitivity", "alert_share"]
    assert all(len(coordinates.split()) == len(POINTS) for _, coordinates in lines)
    marks = re.findall(r'<g class="mark (\w+)" data-threshold="([^"]+)">(.+?)</g>', svg)
    assert [(kind, float(threshold)) for kind, threshold, _ in marks] == [("shipped", SHIPPED), ("review", REVIEW)]
    assert all(body.count("<circle") == 2 for _, _, body in marks)  # on each line
    shipped = read_off(POINTS, SHIPPED)
    assert (f"shipped alert 0.1000: sensitivity {percent(shipped['sensitivity'])}, "
            f"{percent(shipped['alert_share'])} alerted") in svg
    assert "validation fold: 2000 images, 220 melanomas" in page
    # no hospital threshold of its own: the shipped one is in force, and the page says what it gives
    in_force = text_of(re.search(r'data-testid="in-force">(.+?)</p>', page, re.S).group(1))
    assert in_force == (f"With model test-curve, St Curve alerts at 0.1000 (the model's own): expected"
                        f" melanoma sensitivity {percent(shipped['sensitivity'])},"
                        f" {percent(shipped['alert_share'])} of images alerted.")
    rows = choice_rows(page)
    assert [row["threshold"] for row in rows] == sorted(row["threshold"] for row in rows)
    assert [row["marks"] for row in rows if row["marks"]] == ["review", "shipped alert"]
    assert [row["choose"] for row in rows if row["marks"] == "shipped alert"] == ["in force"]
    # every other row is a point of the curve, shown as measured there
    by_threshold = {repr(point["threshold"]): point for point in POINTS}
    offered = [row for row in rows if row["value"] and row["marks"] != "review"]
    assert len(offered) >= 10
    for row in offered:
        point = by_threshold[row["value"]]
        assert row["sensitivity"] == percent(point["sensitivity"])
        assert row["specificity"] == percent(point["specificity"])
        assert row["alerted"] == f"{percent(point['alert_share'])} ({point['alert_share'] * 1000:.0f} per 1,000)"


def test_picking_a_row_sets_the_hospitals_threshold_for_the_active_version(admin, curve_config, make_hospital,
                                                                          sessions):
    client = admin(curve_config)
    hospital = make_hospital("St Pick", webhook_url="https://pacs.example/hook")
    url = f"/admin/hospitals/{hospital.id}/threshold"
    rows = choice_rows(client.get(url).text)
    # a stricter choice than the shipped one: fewer images alerted
    row = next(row for row in reversed(rows) if row["value"] and not row["marks"])
    point = next(point for point in POINTS if repr(point["threshold"]) == row["value"])
    assert point["threshold"] > SHIPPED
    saved = client.post(url, data={"alert_threshold": row["value"]})
    assert saved.status_code == 303 and saved.headers["Location"].endswith(url)
    with sessions() as session:
        stored = session.get(Hospital, hospital.id)
        active = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
        assert stored.alert_threshold == point["threshold"]  # exactly the curve's point
        assert stored.alert_threshold_version_id == active.id and active.version == "test-curve"
        assert stored.webhook_url == "https://pacs.example/hook"  # untouched
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "update")).one()
        assert audit.detail["after"] == {"alert_threshold": point["threshold"],
                                         "alert_threshold_version_id": active.id}

    page = client.get(url).text
    assert f"St Pick alerts at {point['threshold']:.4f} with test-curve." in page  # the flash
    in_force = text_of(re.search(r'data-testid="in-force">(.+?)</p>', page, re.S).group(1))
    assert (f"alerts at {point['threshold']:.4f} (its own choice): expected melanoma sensitivity"
            f" {percent(point['sensitivity'])}, {percent(point['alert_share'])} of images alerted.") in in_force
    marks = re.findall(r'<g class="mark (\w+)" data-threshold="([^"]+)"', page)
    assert marks == [("shipped", repr(SHIPPED)), ("review", repr(REVIEW)), ("hospital", row["value"])]
    chosen = next(row for row in choice_rows(page) if row["marks"] == "St Pick")
    assert chosen["choose"] == "in force" and chosen["sensitivity"] == percent(point["sensitivity"])
    assert chosen["alerted"].startswith(percent(point["alert_share"]))
    hospitals = text_of(client.get("/admin/hospitals").text)
    assert (f"In force with test-curve: {point['threshold']:.4f}, expected melanoma sensitivity"
            f" {percent(point['sensitivity'])}, {percent(point['alert_share'])} of images alerted.") in hospitals

    # back to the shipped threshold: no threshold of its own, so the next version's own applies
    shipped = next(row for row in choice_rows(page) if row["marks"] == "shipped alert")
    assert shipped["value"] == ""
    assert client.post(url, data={"alert_threshold": ""}).status_code == 303
    with sessions() as session:
        stored = session.get(Hospital, hospital.id)
        assert (stored.alert_threshold, stored.alert_threshold_version_id) == (None, None)
    assert client.post(url, data={"alert_threshold": "1.5"}).status_code == 400


def test_a_threshold_set_for_another_version_is_not_marked_as_in_force(admin, curve_config, make_hospital,
                                                                       sessions):
    client = admin(curve_config)
    client.get("/admin/hospitals")  # registers and activates the curve bundle
    with sessions.begin() as session:
        old = ModelVersion(version="test-old", path="/nowhere", classes=CLASSES, alert_threshold=0.5,
                           card={}, active=False)
        session.add(old)
        session.flush()
        hospital = Hospital(name="St Stale", alert_threshold=0.42, alert_threshold_version_id=old.id)
        session.add(hospital)
    page = client.get(f"/admin/hospitals/{hospital.id}/threshold").text
    assert 'data-testid="stale-threshold"' in page
    assert "St Stale alerts at 0.1000 (the model's own)" in text_of(page)
    assert re.findall(r'<g class="mark (\w+)"', page) == ["shipped", "review"]


def test_an_alert_threshold_below_the_review_threshold_is_warned_about(admin, curve_config, make_hospital,
                                                                      sessions):
    client = admin(curve_config)
    client.get("/admin/hospitals")  # registers and activates the curve bundle
    hospital = make_hospital()
    url = f"/admin/hospitals/{hospital.id}/threshold"
    assert 'data-testid="below-review"' not in client.get(url).text  # the shipped 0.1 is above 0.03
    assert client.post(url, data={"alert_threshold": str(REVIEW / 2)}).status_code == 303
    warning = re.search(r'data-testid="below-review">(.+?)</p>', client.get(url).text, re.S)
    assert warning and f"review threshold ({REVIEW:.4f})" in text_of(warning.group(1))


def test_without_a_curve_the_pages_say_so_and_keep_the_typed_threshold(admin, config, make_hospital):
    client = admin(config)  # the tiny bundle recorded no curve
    hospital = make_hospital()
    page = client.get(f"/admin/hospitals/{hospital.id}/threshold").text
    assert 'data-testid="no-curve"' in page and "<svg" not in page
    hospitals = client.get("/admin/hospitals").text
    assert 'data-testid="no-curve"' in hospitals
    assert f'name="h{hospital.id}-alert_threshold"' in hospitals
    assert "/threshold" not in hospitals


def test_only_admins_open_the_threshold_page(app, make_user, make_hospital):
    hospital = make_hospital()
    client = app.test_client()
    assert client.get(f"/admin/hospitals/{hospital.id}/threshold").status_code == 302  # to sign-in
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(Role.DERMATOLOGIST, hospital=hospital)
    client.post("/login", data={"email": user.email, "password": TEST_PASSWORD})
    assert client.get(f"/admin/hospitals/{hospital.id}/threshold").status_code == 403


# --- the curve's pieces --------------------------------------------------------------------

CURVE = [{"threshold": 0.01, "sensitivity": 1.0, "specificity": 0.2, "alert_share": 0.8},
         {"threshold": 0.1, "sensitivity": 0.9, "specificity": 0.6, "alert_share": 0.4},
         {"threshold": 0.5, "sensitivity": 0.5, "specificity": 0.9, "alert_share": 0.1}]


def test_read_off_takes_points_interpolates_between_them_and_holds_beyond():
    assert read_off(CURVE, 0.1) == CURVE[1]
    between = read_off(CURVE, 0.3)
    assert between["threshold"] == 0.3
    assert between["sensitivity"] == pytest.approx(0.7) and between["alert_share"] == pytest.approx(0.25)
    assert read_off(CURVE, 0.001) == {**CURVE[0], "threshold": 0.001}
    assert read_off(CURVE, 0.9) == {**CURVE[2], "threshold": 0.9}


def test_choices_centre_on_the_first_mark_and_hold_every_mark():
    marks = [Mark("shipped alert", 0.1, "shipped"), Mark("review", 0.3, "review")]
    rows = choices(CURVE, marks, rows=3, step=0.3)
    assert [row["threshold"] for row in rows] == [0.01, 0.1, 0.3, 0.5]
    assert [[mark.kind for mark in row["marks"]] for row in rows] == [[], ["shipped"], ["review"], []]
    assert len(choices(POINTS, marks)) == 12 + 2  # both marks fall between its points


def test_svg_escapes_labels_and_spans_decades():
    svg = curve_svg(CURVE, [Mark("<St & Co>", 0.1, "hospital")], "title <b>")
    assert "&lt;St &amp; Co&gt;" in svg and "title &lt;b&gt;" in svg
    assert [tick for tick in re.findall(r'text-anchor="middle">([\d.e-]+)<', svg)] == ["0.01", "0.1", "1"]
