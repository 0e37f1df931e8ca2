"""CSRF protection on the pages' forms (Flask-WTF), switched on as in production.

    pytest tests/web/test_pages_csrf.py -q
"""

from __future__ import annotations

import re

from sqlalchemy import select

from dermscreen.db import Review
from dermscreen.db.tenancy import Role
from tests.conftest import TEST_PASSWORD

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    match = TOKEN.search(page)
    assert match, "page has no CSRF token"
    return match.group(1) or match.group(2)


def test_forms_without_a_csrf_token_are_refused(app, make_hospital, make_scored_batch, make_user,
                                                sessions):
    assert app.config.get("WTF_CSRF_ENABLED", True)
    hospital = make_hospital()
    made = make_scored_batch(hospital=hospital)
    user = make_user(Role.DERMATOLOGIST, hospital=hospital)
    client = app.test_client()
    refused = client.post("/login", data={"email": user.email, "password": TEST_PASSWORD})
    assert refused.status_code == 400 and "CSRF" in refused.text
    token = csrf_token(client.get("/login").text)
    assert client.post("/login", data={"email": user.email, "password": TEST_PASSWORD,
                                       "csrf_token": token}).status_code == 302

    image_id = made.images[0].id
    url = f"/cases/{image_id}/review"
    assert client.post(url, data={"decision": "melanoma"}).status_code == 400
    assert client.post(url, data={"decision": "melanoma", "csrf_token": "forged"}).status_code == 400
    assert client.post(f"/alerts/{made.alerts[0].id}/acknowledge").status_code == 400
    assert client.post("/logout").status_code == 400
    with sessions() as session:
        assert session.scalars(select(Review)).all() == []

    page_token = csrf_token(client.get(f"/cases/{image_id}").text)
    assert client.post(url, data={"decision": "melanoma", "csrf_token": page_token}).status_code == 303
    with sessions() as session:
        assert len(session.scalars(select(Review)).all()) == 1

