"""API authentication, tenant scoping and JSON errors, on SQLite and PostgreSQL."""

import pytest

from dermscreen import accounts
from dermscreen.db import ApiToken


def auth(plaintext: str) -> dict:
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing API token"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API token"),
    ({"Authorization": "Bearer "}, "missing API token"),
    ({"Authorization": "Bearer ds_not-a-real-token"}, "invalid or revoked"),
])
def test_requests_without_a_valid_token_get_401_with_a_reason(client, headers, reason):
    for method, url in (("get", "/api/v1/alerts"), ("get", "/api/v1/batches/abc"),
                        ("post", "/api/v1/batches")):
        response = getattr(client, method)(url, headers=headers)
        assert response.status_code == 401, url
        assert response.is_json
        assert response.json["error"] == "unauthorized"
        assert reason in response.json["reason"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_refused(client, sessions, make_token):
    token, plaintext = make_token()
    assert client.get("/api/v1/alerts", headers=auth(plaintext)).status_code == 200
    with sessions.begin() as session:
        accounts.revoke_token(session, session.get(ApiToken, token.id))
    response = client.get("/api/v1/alerts", headers=auth(plaintext))
    assert response.status_code == 401
    assert "revoked" in response.json["reason"]


def test_valid_token_is_marked_used(client, sessions, make_token):
    token, plaintext = make_token()
    client.get("/api/v1/alerts", headers=auth(plaintext))
    with sessions() as session:
        assert session.get(ApiToken, token.id).last_used_at is not None


def test_openapi_document_needs_no_token(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json["openapi"].startswith("3.")


def test_unknown_api_urls_and_methods_answer_json(client, make_token):
    _, plaintext = make_token()
    missing = client.get("/api/v1/no-such-thing", headers=auth(plaintext))
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    wrong_method = client.delete("/api/v1/alerts", headers=auth(plaintext))
    assert wrong_method.status_code == 405 and wrong_method.is_json
    assert "GET" in wrong_method.headers["Allow"]


def test_another_hospitals_objects_are_404_like_missing_ones(client, make_hospital, make_token,
                                                             make_scored_batch):
    ours, theirs = make_hospital(), make_hospital()
    _, our_token = make_token(ours)
    _, their_token = make_token(theirs)
    made = make_scored_batch(ours, {"red.jpg": 0.95, "blue.jpg": 0.05})
    batch_id, image_id, alert_id = made.batch.id, made.images[0].id, made.alerts[0].id

    reads = [f"/api/v1/batches/{batch_id}", f"/api/v1/batches/{batch_id}/results",
             f"/api/v1/batches/{batch_id}/results?format=csv", f"/api/v1/images/{image_id}"]
    actions = [f"/api/v1/alerts/{alert_id}/acknowledge", f"/api/v1/alerts/{alert_id}/resolve"]
    for url in reads:
        assert client.get(url, headers=auth(our_token)).status_code == 200, url
        response = client.get(url, headers=auth(their_token))
        assert response.status_code == 404, url
        assert response.json["error"] == "not_found"
    for url in actions:
        response = client.post(url, headers=auth(their_token))
        assert response.status_code == 404, url
    # a foreign id reads exactly like one that does not exist
    foreign = client.get(f"/api/v1/batches/{batch_id}", headers=auth(their_token)).json
    missing = client.get("/api/v1/batches/0123456789abcdef", headers=auth(their_token)).json
    assert foreign.keys() == missing.keys() and foreign["error"] == missing["error"]

    assert client.get("/api/v1/alerts", headers=auth(their_token)).json["alerts"] == []
    assert len(client.get("/api/v1/alerts", headers=auth(our_token)).json["alerts"]) == 1
    # their failed attempts changed nothing
    alert = client.get("/api/v1/alerts", headers=auth(our_token)).json["alerts"][0]
    assert alert["status"] == "pending"
