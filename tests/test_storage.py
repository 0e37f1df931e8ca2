"""The object store: the local directory and S3 (against the S3-compatible test server) keep the
same promises."""

from __future__ import annotations

import io
import json

import pytest

from dermscreen.storage import LocalStore, ObjectMissing, S3Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    settings = request.getfixturevalue("s3_server").bucket("some/prefix")
    return S3Store(settings["store_url"], settings["s3_endpoint_url"], settings["s3_region"],
                   settings["s3_access_key_id"], settings["s3_secret_access_key"])


def test_put_read_exists_and_delete_a_folder(store):
    ref = store.put("uploads/b1/files/0000", b"first")
    store.put_stream("uploads/b1/manifest.json", io.BytesIO(b"{}"))
    kept = store.put("uploads/b10/files/0000", b"another batch")  # same leading characters
    assert ref == store.ref("uploads/b1/files/0000")
    assert store.read(ref) == b"first" and store.exists("uploads/b1/manifest.json")
    assert not store.exists("uploads/b1/files/0001")

    store.delete_tree(store.ref("uploads/b1"))

    assert not store.exists("uploads/b1/files/0000") and not store.exists("uploads/b1/manifest.json")
    assert store.read(kept) == b"another batch"
    with pytest.raises(ObjectMissing):
        store.read(ref)
    store.delete_tree(store.ref("uploads/never"))  # nothing to delete is no error


def test_a_rewrite_replaces_the_object_and_a_download_is_a_local_copy(store, tmp_path):
    store.put("heatmaps/x.png", b"old")
    ref = store.put("heatmaps/x.png", b"new")
    assert store.download(ref, tmp_path / "copy" / "x.png").read_bytes() == b"new"


def test_s3_references_name_the_bucket_and_prefix(s3_server):
    settings = s3_server.bucket("deep/prefix")
    store = S3Store(settings["store_url"], settings["s3_endpoint_url"], settings["s3_region"],
                    settings["s3_access_key_id"], settings["s3_secret_access_key"])
    ref = store.put("images/ab/ab.png", b"x")
    assert ref == f"{settings['store_url']}/images/ab/ab.png"
    bucket = settings["store_url"].split("/")[2]
    body = s3_server.client().get_object(Bucket=bucket, Key="deep/prefix/images/ab/ab.png")["Body"]
    assert body.read() == b"x"


def test_store_init_creates_the_bucket_once(s3_server, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from dermscreen.cli import main

    settings = s3_server.bucket()
    bucket = f"fresh-{tmp_path.name[-8:].lower().replace('_', '-')}"
    settings["store_url"] = f"s3://{bucket}/images"
    monkeypatch.setenv("DERMSCREEN_HOME", str(tmp_path))
    for name, value in settings.items():
        monkeypatch.setenv(f"DERMSCREEN_{name.upper()}", value)
    for _ in range(2):  # a second run finds the bucket there
        result = CliRunner().invoke(main, ["store", "init"])
        assert result.exit_code == 0, result.output
        assert f"s3://{bucket}/images" in result.output
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert bucket in names
