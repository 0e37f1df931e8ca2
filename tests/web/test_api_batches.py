"""Batches over the API: what is accepted and stored, what is refused and why, and the list."""

import io
import json
import tarfile
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from dermscreen.db import AuditEntry, Batch, BatchStatus
from tests.factories import BLUE, RED, image_bytes, lesion_image


def auth(plaintext: str) -> dict:
    return {"Authorization": f"Bearer {plaintext}"}


def jpeg(color=RED, seed=0) -> bytes:
    return image_bytes(lesion_image(color, size=(32, 32), seed=seed))


def zip_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def enqueued(monkeypatch, sessions):
    """Records enqueue_ingest calls, with whether the batch was already committed at that time."""
    calls = []

    def enqueue_ingest(config, batch_id):
        with sessions() as session:  # a separate connection sees only committed rows
            calls.append((batch_id, session.get(Batch, batch_id) is not None))

    monkeypatch.setattr("dermscreen.web.api.batches.enqueue_ingest", enqueue_ingest)
    return calls


def post_batch(client, token, files, metadata=None, **kwargs):
    data = {"files": [(io.BytesIO(content), name) for name, content in files]}
    if metadata is not None:
        data["metadata"] = (io.BytesIO(metadata.encode()), "metadata.csv")
    return client.post("/api/v1/batches", data=data, headers=auth(token),
                       content_type="multipart/form-data", **kwargs)


def test_images_and_archives_with_metadata_are_accepted_and_stored(
        client, config, sessions, make_token, enqueued):
    token, plaintext = make_token()
    files = [
        ("lesion1.jpg", jpeg(RED)),
        ("more.zip", zip_of({"a/lesion2.jpg": jpeg(BLUE, 1), "lesion3.jpg": jpeg(RED, 2)})),
        ("more.tar.gz", tar_gz_of({"lesion4.jpg": jpeg(BLUE, 3)})),
        ("more.tgz", tar_gz_of({"lesion5.jpg": jpeg(RED, 4)})),
    ]
    metadata = "image,age,site\nlesion1.jpg,61,back\nlesion2,45,arm\n"
    response = post_batch(client, plaintext, files, metadata)

    assert response.status_code == 202, response.json
    body = response.json
    assert body["status"] == "received" and body["files"] == 4
    assert response.headers["Location"].endswith(f"/api/v1/batches/{body['id']}")
    assert enqueued == [(body["id"], True)]  # enqueued once, after the commit

    with sessions() as session:
        batch = session.get(Batch, body["id"])
        assert batch.status is BatchStatus.RECEIVED
        assert batch.hospital_id == token.hospital_id
        assert batch.submitted_by_token_id == token.id
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "submit")).one()
        assert entry.object_id == batch.id and entry.token_id == token.id
    upload_dir = Path(batch.upload_dir)
    assert upload_dir.is_relative_to(Path(config.store_dir) / "uploads")
    manifest = json.loads((upload_dir / "manifest.json").read_text())
    assert [item["name"] for item in manifest["files"]] == [name for name, _ in files]
    for item, (_, content) in zip(manifest["files"], files):
        assert (upload_dir / item["path"]).read_bytes() == content
        assert item["bytes"] == len(content)
    assert manifest["metadata"] == "metadata.csv"
    assert (upload_dir / "metadata.csv").read_text() == metadata


def test_upload_names_never_become_paths(client, config, sessions, make_token, enqueued):
    _, plaintext = make_token()
    response = post_batch(client, plaintext, [("../../../escape.jpg", jpeg()),
                                              ("/etc/cron.d/x.jpg", jpeg(BLUE))])
    assert response.status_code == 202
    with sessions() as session:
        upload_dir = Path(session.get(Batch, response.json["id"]).upload_dir)
    manifest = json.loads((upload_dir / "manifest.json").read_text())
    assert [item["name"] for item in manifest["files"]] == ["escape.jpg", "x.jpg"]
    stored = {path.relative_to(config.home) for path in Path(config.home).rglob("*.jpg")}
    assert stored == set()  # files are stored under numbers, not their names
    assert sorted(p.name for p in (upload_dir / "files").iterdir()) == ["0000", "0001"]


@pytest.mark.parametrize("files, metadata, status, reason", [
    ([], None, 400, "no files"),
    ([("empty.jpg", b"")], None, 400, "empty.jpg: empty file"),
    ([("notes.txt", b"hello, not an image")], None, 415, "notes.txt: not a JPEG"),
    ([("ok.jpg", jpeg()), ("evil.exe", b"MZ\x90\x00binary")], None, 415, "evil.exe"),
    ([("ok.jpg", jpeg())], "name,age\nok.jpg,3\n", 400, "needs an 'image' or 'filename'"),
    ([("ok.jpg", jpeg())], "image,age\nok.jpg,3\nok.jpg,4\n", 400, "listed twice"),
    ([("ok.jpg", jpeg())], "image,age\n,3\n", 400, "empty 'image'"),
])
def test_refused_uploads_say_why_and_store_nothing(client, config, sessions, make_token, enqueued,
                                                   files, metadata, status, reason):
    _, plaintext = make_token()
    response = post_batch(client, plaintext, files, metadata)
    assert response.status_code == status
    assert reason in response.json["reason"]
    assert enqueued == []
    with sessions() as session:
        assert session.scalars(select(Batch)).all() == []
    assert not (Path(config.store_dir) / "uploads").exists()


def test_non_multipart_body_is_415(client, make_token, enqueued):
    _, plaintext = make_token()
    response = client.post("/api/v1/batches", json={"files": []}, headers=auth(plaintext))
    assert response.status_code == 415
    assert "multipart/form-data" in response.json["reason"]


def test_upload_over_the_limit_is_413(config, make_token, enqueued):
    from dermscreen.web import create_app

    config.max_upload_bytes = 20_000
    client = create_app(config).test_client()
    _, plaintext = make_token()
    response = post_batch(client, plaintext, [("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 30_000)])
    assert response.status_code == 413
    assert "exceeds the limit of 20000 bytes" in response.json["reason"]
    assert enqueued == []


@pytest.fixture
def make_batches(sessions):
    """``make_batches(hospital, n) -> [ids]``: n batches of ``hospital``, oldest first."""
    start = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)

    def make(hospital, n: int) -> list[str]:
        with sessions.begin() as session:
            batches = [Batch(hospital_id=hospital.id, upload_dir="/nowhere", total_images=i,
                             created_at=start + timedelta(minutes=i)) for i in range(n)]
            session.add_all(batches)
            session.flush()
            return [batch.id for batch in batches]

    return make


def test_batch_list_shows_only_the_callers_hospital_newest_first(
        client, sessions, make_hospital, make_token, make_batches):
    ours, theirs = make_hospital(), make_hospital()
    _, our_token = make_token(ours)
    _, their_token = make_token(theirs)
    their_ids = make_batches(theirs, 2)
    our_ids = make_batches(ours, 3)

    response = client.get("/api/v1/batches", headers=auth(our_token))
    assert response.status_code == 200
    body = response.json
    assert [item["id"] for item in body["batches"]] == our_ids[::-1]
    assert (body["limit"], body["offset"]) == (100, 0)
    for item in body["batches"]:  # the same summary as GET /batches/<id>
        assert item == client.get(f"/api/v1/batches/{item['id']}", headers=auth(our_token)).json
    theirs_seen = client.get("/api/v1/batches", headers=auth(their_token)).json["batches"]
    assert [item["id"] for item in theirs_seen] == their_ids[::-1]
    assert client.get("/api/v1/batches").status_code == 401
    with sessions() as session:  # each listing is audited against the token's hospital
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "view_batches")
                                  .order_by(AuditEntry.id)).all()
    assert [(e.object_type, e.hospital_id, e.detail["shown"]) for e in entries] == [
        ("Hospital", ours.id, 3), ("Hospital", theirs.id, 2)]


def test_batch_list_pages_with_limit_and_offset(client, make_hospital, make_token, make_batches):
    hospital = make_hospital()
    _, plaintext = make_token(hospital)
    newest_first = make_batches(hospital, 5)[::-1]

    def page(query):
        response = client.get(f"/api/v1/batches?{query}", headers=auth(plaintext))
        assert response.status_code == 200, response.json
        return [item["id"] for item in response.json["batches"]]

    assert page("limit=2") == newest_first[:2]
    assert page("limit=2&offset=2") == newest_first[2:4]
    assert page("limit=2&offset=4") == newest_first[4:]
    assert page("offset=5") == []
    for query, reason in [("limit=0", "limit must lie between 1 and 1000"),
                          ("limit=1001", "limit must lie between 1 and 1000"),
                          ("limit=ten", "limit must be an integer"),
                          ("offset=-1", "offset must lie between")]:
        response = client.get(f"/api/v1/batches?{query}", headers=auth(plaintext))
        assert response.status_code == 400 and reason in response.json["reason"], query
