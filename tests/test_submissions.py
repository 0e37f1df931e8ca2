"""Submission helpers: upload names, file kinds and the metadata CSV."""

import io
from pathlib import Path

import pytest

from dermscreen.submissions import (HEAD_BYTES, UploadRefused, check_upload, display_name,
                                    metadata_for, read_metadata, upload_kind)
from tests.factories import image_bytes, lesion_image


@pytest.mark.parametrize("filename, expected", [
    ("lesion.jpg", "lesion.jpg"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\lesion.png", "lesion.png"),
    ("dir/", "dir"),
    ("", "upload-3"),
    (None, "upload-3"),
])
def test_display_name_is_a_label_not_a_path(filename, expected):
    assert display_name(filename, 3) == expected


@pytest.mark.parametrize("filename, expected", [
    ("sub1/a.png", "sub1/a.png"),
    ("./sub/../a.png", "sub/a.png"),
    ("/abs/a.png", "abs/a.png"),
    ("sub\\a.png", "sub/a.png"),
    ("", "upload-3"),
])
def test_display_name_keeps_relative_folders_when_asked(filename, expected):
    assert display_name(filename, 3, keep_folders=True) == expected


@pytest.mark.parametrize("format, kind", [
    ("JPEG", "image"), ("PNG", "image"), ("TIFF", "image"), ("BMP", "image"), ("WEBP", "image"),
    ("GIF", None),
])
def test_upload_kind_recognises_the_accepted_image_formats(format, kind):
    data = image_bytes(lesion_image(size=(16, 16)), format=format)
    assert upload_kind(data[:16]) == kind


def test_upload_kind_recognises_dicom_by_the_magic_after_its_preamble():
    import numpy as np

    from tests.dicom_files import dicom_bytes, photograph

    data = dicom_bytes(photograph(np.asarray(lesion_image(size=(16, 16))), "rgb-explicit"))
    assert upload_kind(data[:HEAD_BYTES]) == "image"
    assert upload_kind(bytes(128) + b"DICX") is None


def test_upload_kind_recognises_archives_and_refuses_the_rest():
    assert upload_kind(b"PK\x03\x04rest") == "archive"
    assert upload_kind(b"\x1f\x8b\x08\x00") == "archive"
    assert upload_kind(b"%PDF-1.7") is None
    assert upload_kind(b"") is None


def test_check_upload_leaves_streams_at_the_start():
    stream = io.BytesIO(image_bytes(lesion_image(size=(16, 16))))
    metadata = io.BytesIO(b"image,age\na.jpg,50\n")
    check_upload([("a.jpg", stream)], metadata)
    assert stream.tell() == 0 and metadata.tell() == 0


def test_metadata_rows_by_image_name():
    metadata = read_metadata(io.BytesIO("\ufefffilename,age,site\nA.jpg,61,back\nb,45,\n"
                                        .encode()))
    assert metadata == {"A.jpg": {"age": "61", "site": "back"}, "b": {"age": "45", "site": ""}}
    assert metadata_for(metadata, "A.jpg") == {"age": "61", "site": "back"}
    assert metadata_for(metadata, "clinic/A.jpg")["age"] == "61"
    assert metadata_for(metadata, "archive/b.png")["age"] == "45"
    assert metadata_for(metadata, "c.jpg") is None


def test_metadata_that_is_not_utf8_is_refused():
    with pytest.raises(UploadRefused, match="UTF-8") as refused:
        read_metadata(io.BytesIO(b"image\n\xff\xfe\xfa.jpg\n"))
    assert refused.value.status == 400


class BrokenStream(io.BytesIO):
    """A client that hangs up after the first block."""

    def read(self, size=-1):
        if self.tell() > 0:
            raise OSError("connection reset by peer")
        return super().read(4)


def test_a_broken_upload_leaves_no_files_and_no_batch(config, sessions, make_hospital):
    from sqlalchemy import select

    from dermscreen.db import Batch
    from dermscreen.submissions import submit_batch

    hospital = make_hospital()
    good = io.BytesIO(image_bytes(lesion_image(size=(16, 16))))
    with sessions() as session, pytest.raises(OSError, match="reset"):
        submit_batch(session, config, hospital.id, [("a.jpg", good),
                                                    ("b.jpg", BrokenStream(b"\xff\xd8\xff" * 9))])
    with sessions() as session:
        assert session.scalars(select(Batch)).all() == []
    assert list((Path(config.store_dir) / "uploads").iterdir()) == []
