"""`dermscreen screen` end to end on the embedded default (SQLite under $DERMSCREEN_HOME), and the
embedded background worker that `dermscreen serve` starts."""

from __future__ import annotations

import io
import json
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from dermscreen.cli import main
from dermscreen.db import Batch, BatchStatus, Delivery, DeliveryStatus
from dermscreen.submissions import submit_batch
from dermscreen.worker.dispatch import enqueue_ingest
from dermscreen.worker.embedded import start_background_worker
from tests.factories import PURPLE, gated_images, image_bytes, lesion_image
from tests.worker.conftest import blue, hostile_batch, red, zip_bytes
from tests.worker.receivers import WebhookReceiver


@pytest.fixture
def lesions(tmp_path):
    folder = tmp_path / "lesions"
    (folder / "sub").mkdir(parents=True)
    (folder / "red.jpg").write_bytes(red())
    (folder / "sub" / "blue.png").write_bytes(blue())
    (folder / "corrupt.jpg").write_bytes(red()[:800])
    (folder / ".DS_Store").write_bytes(b"finder junk")
    archive = tmp_path / "more.zip"
    archive.write_bytes(zip_bytes({"more/red2.jpg": red(2)}))
    return folder, archive


def run_screen(tmp_path, *args):
    env = {"DERMSCREEN_HOME": str(tmp_path / "home"), "DERMSCREEN_DATABASE_URL": "",
           "DERMSCREEN_BROKER_URL": "", "DERMSCREEN_STORE_DIR": "",
           "DERMSCREEN_MAX_IMAGE_PIXELS": "1000000"}
    result = CliRunner().invoke(main, ["screen", *map(str, args)], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_screen_json_on_a_folder_and_an_archive(tmp_path, lesions, tiny_bundle):
    folder, archive = lesions
    result = run_screen(tmp_path, folder, archive, "--json", "--model", tiny_bundle)

    report = json.loads(result.stdout)
    assert set(report) == {"batch", "results", "summary"}
    rows = {row["image"]: row for row in report["results"]}
    assert set(rows) == {"red.jpg", "sub/blue.png", "corrupt.jpg", "more.zip/more/red2.jpg"}
    for row in report["results"]:
        assert list(row) == ["image", "status", "melanoma_probability", "diagnosis",
                             "probabilities", "flagged", "tier", "error"]
        assert row["status"] in {"done", "failed"}
    assert [row["image"] for row in report["results"]][:2] == sorted(
        ["red.jpg", "more.zip/more/red2.jpg"], key=lambda name: -rows[name]["melanoma_probability"])
    assert rows["red.jpg"]["flagged"] and rows["red.jpg"]["diagnosis"] == "melanoma"
    assert not rows["sub/blue.png"]["flagged"] and rows["sub/blue.png"]["diagnosis"] == "nevus"
    assert rows["corrupt.jpg"]["status"] == "failed" and "corrupt image" in rows["corrupt.jpg"]["error"]
    assert rows["corrupt.jpg"]["melanoma_probability"] is None
    assert report["summary"]["status"] == "done"
    assert report["summary"]["counts"] == {"total": 4, "done": 3, "failed": 1, "unassessable": 0,
                                           "flagged": 2, "pending": 0}
    assert (tmp_path / "home" / "dermscreen.db").is_file()


def test_screen_labels_images_by_their_path_under_the_folder(tmp_path, tiny_bundle):
    folder = tmp_path / "clinic"
    for sub, data in (("left", red(1)), ("right", blue(1))):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "a.png").write_bytes(data)
    (folder / "visits.zip").write_bytes(zip_bytes({"day1/a.png": red(2), "day2/a.png": blue(2)}))

    report = json.loads(run_screen(tmp_path, folder, "--json", "--model", tiny_bundle).stdout)
    rows = {row["image"]: row for row in report["results"]}
    assert set(rows) == {"left/a.png", "right/a.png", "visits.zip/day1/a.png",
                         "visits.zip/day2/a.png"}
    assert rows["left/a.png"]["flagged"] and not rows["right/a.png"]["flagged"]
    assert rows["visits.zip/day1/a.png"]["flagged"] and not rows["visits.zip/day2/a.png"]["flagged"]

    table = run_screen(tmp_path, folder, "--model", tiny_bundle).stdout.splitlines()
    labels = {line.split()[0]: line for line in table[1:5]}
    assert set(labels) == set(rows) and labels["left/a.png"].split()[3] == "alert"


def test_screen_prints_a_table_and_refuses_hostile_archives(tmp_path, tiny_bundle):
    for name, data in hostile_batch().items():
        (tmp_path / name).write_bytes(data)
    names = [tmp_path / name for name in hostile_batch()]

    result = run_screen(tmp_path, *names, "--model", tiny_bundle)

    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["image", "status", "melanoma", "tier"]
    table = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert table["red.jpg"].split()[3:5] == ["alert", "melanoma"]
    assert "outside the archive" in table["traversal.zip"]
    assert "a link" in table["symlink.tar.gz"]
    assert "compression ratio" in table["bomb.zip"]
    assert "decompression bomb" in table["good.zip/lesions/bomb.png"]
    assert ("9 images, 3 scored, 6 failed, 0 cannot be assessed; 2 flagged (alert tier), 0 in the"
            " review tier") in result.stdout


def test_screen_without_a_usable_bundle_says_why(tmp_path, lesions):
    folder, _ = lesions
    env = {"DERMSCREEN_HOME": str(tmp_path / "home"), "DERMSCREEN_DATABASE_URL": "",
           "DERMSCREEN_MODEL_BUNDLE": str(tmp_path / "missing")}
    result = CliRunner().invoke(main, ["screen", str(folder)], env=env)
    assert result.exit_code == 1
    assert "is not a model bundle" in result.output


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_background_worker_runs_the_real_tasks_on_the_filesystem_broker(
        sessions, config, make_hospital):
    assert config.embedded
    with WebhookReceiver() as hook:
        hospital = make_hospital(webhook_url=hook.url)
        with sessions.begin() as session:
            uploads = [("red.jpg", io.BytesIO(red())), ("blue.png", io.BytesIO(blue())),
                       ("bad.jpg", io.BytesIO(b"not an image"))]
            batch_id = submit_batch(session, config, hospital.id, uploads).id
        worker = start_background_worker(config)
        try:
            enqueue_ingest(config, batch_id)

            def finished():
                with sessions() as session:
                    batch = session.get(Batch, batch_id)
                    return batch.status is BatchStatus.DONE and batch

            batch = wait_for(finished, 60, "the batch to be scored")
            assert (batch.done_images, batch.failed_images, batch.flagged_images) == (2, 1, 1)

            def delivered():
                with sessions() as session:
                    return session.scalar(select(Delivery.status)) is DeliveryStatus.SENT

            wait_for(delivered, 30, "the webhook delivery")
            assert [body["image"] for _, body in hook.calls] == ["red.jpg"]
        finally:
            worker.stop()


def test_screen_tells_apart_named_files_of_the_same_name(tmp_path, tiny_bundle):
    named = {"visit1/left/a.png": red(3), "visit2/left/a.png": blue(3), "visit2/b.png": blue(4)}
    for name, data in named.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    named = [tmp_path / name for name in named] + [tmp_path / "visit2/b.png"]  # b.png twice

    report = json.loads(run_screen(tmp_path, *named, "--json", "--model", tiny_bundle).stdout)
    rows = {row["image"]: row for row in report["results"]}
    assert sorted(rows) == ["b.png", "visit1/left/a.png", "visit2/left/a.png"]
    assert [row["image"] for row in report["results"]].count("b.png") == 2  # the same file
    assert rows["visit1/left/a.png"]["flagged"] and not rows["visit2/left/a.png"]["flagged"]


def test_screen_reports_unassessable_images_and_the_tiers_of_the_rest(tmp_path, tiny_bundle):
    folder = tmp_path / "clinic"
    folder.mkdir()
    gated = gated_images()
    for name, (data, _) in gated.items():
        (folder / name).write_bytes(data)
    lesions = {"red.jpg": red(), "purple.jpg": image_bytes(lesion_image(PURPLE)),
               "blue.png": blue()}
    for name, data in lesions.items():
        (folder / name).write_bytes(data)

    report = json.loads(run_screen(tmp_path, folder, "--json", "--model", tiny_bundle).stdout)

    rows = {row["image"]: row for row in report["results"]}
    assert [row["image"] for row in report["results"]] == [
        "red.jpg", "purple.jpg", "blue.png", *sorted(gated)]  # alert, review, none, unscored
    for name, (_, reason) in gated.items():
        assert rows[name] == {"image": name, "status": "unassessable", "melanoma_probability": None,
                              "diagnosis": None, "probabilities": None, "flagged": False,
                              "tier": None, "error": reason}
    assert {name: rows[name]["tier"] for name in lesions} == {
        "red.jpg": "alert", "purple.jpg": "review", "blue.png": "none"}
    assert all(row["flagged"] == (row["tier"] == "alert") for row in report["results"])
    assert 0.2 <= rows["purple.jpg"]["melanoma_probability"] < 0.5
    assert report["summary"]["status"] == "done" and report["summary"]["progress"] == 1.0
    assert report["summary"]["counts"] == {"total": 7, "done": 3, "failed": 0, "unassessable": 4,
                                           "flagged": 1, "pending": 0}

    output = run_screen(tmp_path, folder, "--model", tiny_bundle).stdout
    table = {line.split()[0]: line for line in output.splitlines()[1:8]}
    assert table["grey.png"].split()[1] == "unassessable"
    assert table["grey.png"].endswith(gated["grey.png"][1])
    assert table["purple.jpg"].split()[3] == "review"
    assert ("7 images, 3 scored, 0 failed, 4 cannot be assessed; 1 flagged (alert tier), 1 in the"
            " review tier") in output


def test_screen_writes_hospital_formats_of_a_dicomdir_folder(tmp_path, tiny_bundle):
    import zipfile

    import numpy as np
    import pydicom
    from fhir.resources.R4B.bundle import Bundle
    from pypdf import PdfReader

    from tests.dicom_files import PATIENT_NAME, photograph, write_dicomdir
    from tests.factories import RED

    sources = [photograph(np.asarray(lesion_image(RED)), "rgb-jpeg2000-lossless"),
               photograph(np.asarray(lesion_image(PURPLE, seed=3)), "ybr-full")]
    write_dicomdir(tmp_path / "media", sources)

    (tmp_path / "meta.csv").write_text("image,site\nPT000000/ST000000/SE000000/IM000000,back\n")
    fhir_text = run_screen(tmp_path, tmp_path / "media", "--format", "fhir", "--metadata",
                           tmp_path / "meta.csv", "--model", tiny_bundle).stdout
    bundle = Bundle.model_validate_json(fhir_text)
    assert len(bundle.entry) == 3  # the report and one observation per instance, not DICOMDIR
    sites = [{c.code.coding[0].code: c.valueString for c in entry.resource.component}
             .get("metadata-site") for entry in bundle.entry[1:]]
    assert sorted(sites, key=str) == [None, "back"]
    assert PATIENT_NAME not in fhir_text

    run_screen(tmp_path, tmp_path / "media", "--format", "pdf", "--out", tmp_path / "r.pdf",
               "--model", tiny_bundle)
    reader = PdfReader(tmp_path / "r.pdf")
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "Alerts (1)" in text
    assert sum(len(page.images) for page in reader.pages) == 2  # thumbnail and heatmap

    run_screen(tmp_path, tmp_path / "media", "--format", "sr", "--out", tmp_path / "sr.zip",
               "--model", tiny_bundle)
    with zipfile.ZipFile(tmp_path / "sr.zip") as archive:
        referenced = {pydicom.dcmread(io.BytesIO(archive.read(name)))
                      .CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                      .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                      for name in archive.namelist()}
    assert referenced == {dataset.SOPInstanceUID for dataset in sources}

    result = CliRunner().invoke(main, ["screen", str(tmp_path / "media"), "--format", "pdf"],
                                env={"DERMSCREEN_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2 and "give --out" in result.output


@pytest.mark.parametrize("concurrency,env,threads", [
    (["--concurrency", "2"], {}, 4), ([], {}, 1), ([], {"DERMSCREEN_INFERENCE_THREADS": "3"}, 3)])
def test_a_worker_shares_the_node_cores_out_among_its_processes(monkeypatch, tmp_path,
                                                                  concurrency, env, threads):
    from dermscreen.worker import celery_app
    from dermscreen.worker.commands import worker

    started = {}

    class App:
        def worker_main(self, argv):
            started["argv"] = argv

    def make_celery(config):
        started["config"] = config
        return App()

    monkeypatch.setattr(celery_app, "make_celery", make_celery)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    result = CliRunner().invoke(worker, ["--queues", "inference", *concurrency],
                                env={"DERMSCREEN_HOME": str(tmp_path), **env})
    assert result.exit_code == 0, result.output
    assert started["config"].inference_threads == threads
