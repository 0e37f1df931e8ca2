"""DICOM intake end to end (ingest and inference as plain functions): every transfer syntax and
colour space scores as the same pixels sent as PNG, references are kept, patient identifiers are
not, and what is not a single-frame photograph is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select, text

from dermscreen.db import Base, Image, ImageStatus
from dermscreen.worker import jobs
from dermscreen.worker.dicom import read_dicom
from tests.dicom_files import (KINDS, PATIENT_ID, PATIENT_NAME, VL_PHOTOGRAPHIC, ct_slice,
                               dicom_bytes, expected_pixels, multi_frame, photograph,
                               write_dicomdir)
from tests.factories import PURPLE, RED, image_bytes, lesion_image
from tests.worker.conftest import zip_bytes

PIXELS = np.asarray(lesion_image(PURPLE, size=(64, 64), seed=4))


def screen(worker_config, sessions, make_hospital, submit, files, metadata_csv=None):
    batch_id = submit(make_hospital(), files, metadata_csv)
    for chunk in jobs.run_ingest(worker_config, batch_id):
        jobs.run_predict_chunk(worker_config, chunk)
    with sessions() as session:
        images = session.scalars(select(Image).where(Image.batch_id == batch_id)).all()
        return {image.original_name: (image, image.predictions[0] if image.predictions else None)
                for image in images}


def everything_stored(sessions, store_dir: str) -> bytes:
    """Every row of every table as text, and every file under the image store, as bytes."""
    dump = []
    with sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(text(f'SELECT * FROM "{table.name}"')):
                dump.append(repr(tuple(row)).encode())
    for path in Path(store_dir).rglob("*"):
        if path.is_file():
            dump.append(path.read_bytes())
    return b"\n".join(dump)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_transfer_syntax_and_colour_space_decodes_to_the_pixels_sent(kind, tmp_path):
    path = tmp_path / "lesion.dcm"
    path.write_bytes(dicom_bytes(photograph(PIXELS, kind)))
    pixels, reference = read_dicom(path, 10_000_000)
    difference = np.abs(np.asarray(pixels, dtype=int) - expected_pixels(PIXELS, kind))
    # JPEG baseline: pydicom's decoder and Pillow's upsample chroma a little differently.
    assert difference.max() <= (8 if kind.startswith("jpeg-baseline") else 0)
    assert reference.sop_class_uid == "1.2.840.10008.5.1.4.1.1.77.1.7"


def test_dicom_scores_as_its_pixels_do_as_png_and_keeps_references_not_patients(
        sessions, worker_config, make_hospital, submit):
    datasets = {f"{kind}.dcm": photograph(PIXELS, kind) for kind in KINDS}
    datasets["vl-photo.dcm"] = photograph(PIXELS, "rgb-explicit", sop_class=VL_PHOTOGRAPHIC,
                                          modality="XC")
    files = {name: dicom_bytes(dataset) for name, dataset in datasets.items()}
    for kind in KINDS:
        files[f"{kind}.png"] = image_bytes(
            PILImage.fromarray(expected_pixels(PIXELS, kind)), "PNG")
    files["zipped.zip"] = zip_bytes({"in/zip.dcm": files["rgb-rle.dcm"]})

    results = screen(worker_config, sessions, make_hospital, submit, files,
                     "image,site\nrgb-rle.dcm,back\n")

    for kind in KINDS:
        image, prediction = results[f"{kind}.dcm"]
        _, as_png = results[f"{kind}.png"]
        assert image.status is ImageStatus.DONE, image.error
        assert abs(prediction.melanoma_probability - as_png.melanoma_probability) < 1e-3, kind
        source = datasets[f"{kind}.dcm"]
        assert (image.dicom_study_uid, image.dicom_series_uid, image.dicom_sop_instance_uid,
                image.dicom_sop_class_uid) == (source.StudyInstanceUID, source.SeriesInstanceUID,
                                               source.SOPInstanceUID, source.SOPClassUID)
    assert results["vl-photo.dcm"][0].status is ImageStatus.DONE
    zipped, _ = results["zipped.zip/in/zip.dcm"]
    assert zipped.status is ImageStatus.DONE
    assert zipped.dicom_sop_instance_uid == datasets["rgb-rle.dcm"].SOPInstanceUID
    assert results["rgb-rle.dcm"][0].details == {"site": "back"}
    assert results["rgb-explicit.png"][0].dicom_study_uid is None

    stored = everything_stored(sessions, worker_config.store_dir)
    for identifier in (PATIENT_NAME, PATIENT_ID, "Quinella", "19700101", "ACC-4242"):
        assert identifier.encode() not in stored


def test_dicomdir_layout_is_screened_instance_by_instance(
        sessions, worker_config, make_hospital, submit, tmp_path):
    datasets = [photograph(PIXELS, "rgb-explicit"),
                photograph(np.asarray(lesion_image(RED, size=(64, 64))), "jpeg-baseline-ybr-422")]
    layout = write_dicomdir(tmp_path / "media", datasets)
    assert "DICOMDIR" in layout and len(layout) == 3

    results = screen(worker_config, sessions, make_hospital, submit,
                     {"export.zip": zip_bytes(layout)})

    assert not any(name.endswith("DICOMDIR") for name in results)  # the index is not an image
    assert len(results) == 2
    by_instance = {image.dicom_sop_instance_uid: (image, prediction)
                   for image, prediction in results.values()}
    assert set(by_instance) == {dataset.SOPInstanceUID for dataset in datasets}
    assert all(image.status is ImageStatus.DONE for image, _ in by_instance.values())
    red_uid = datasets[1].SOPInstanceUID
    assert by_instance[red_uid][1].tier == "alert"
    assert PATIENT_NAME.encode() not in everything_stored(sessions, worker_config.store_dir)


def test_multi_frame_and_non_photographic_dicom_are_refused_with_the_reason(
        sessions, worker_config, make_hospital, submit):
    mono = photograph(PIXELS, "rgb-explicit")
    mono.PhotometricInterpretation, mono.SamplesPerPixel = "MONOCHROME2", 1
    mono.PixelData = PIXELS[..., 0].tobytes()
    del mono.PlanarConfiguration
    results = screen(worker_config, sessions, make_hospital, submit, {
        "frames.dcm": dicom_bytes(multi_frame(PIXELS, frames=3)),
        "ct.dcm": dicom_bytes(ct_slice()),
        "mono.dcm": dicom_bytes(mono),
        "truncated.dcm": dicom_bytes(photograph(PIXELS, "rgb-explicit"))[:2000],
    })

    errors = {name: image.error for name, (image, _) in results.items()}
    assert all(image.status is ImageStatus.FAILED for image, _ in results.values())
    assert errors["frames.dcm"] == "multi-frame DICOM (3 frames): send one frame per instance"
    assert "CT Image Storage is not a photographic image" in errors["ct.dcm"]
    assert "MONOCHROME2 is not a colour photograph" in errors["mono.dcm"]
    assert "DICOM" in errors["truncated.dcm"]
