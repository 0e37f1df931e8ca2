"""DICOM intake: a photographic DICOM instance becomes RGB pixels and the references that file
results back, and nothing else.

    if is_dicom(path):
        if is_dicomdir(path): ...                  # the index of a DICOMDIR layout: skipped
        pixels, reference = read_dicom(path, config.max_image_pixels)

Accepted: one frame of Dermoscopic Photography, VL Photographic or Secondary Capture image storage
(modality DMS, XC, OT or none), 8 bits per sample, photometric interpretation RGB, YBR_FULL,
YBR_FULL_422 (or the JPEG 2000 YBR_ICT / YBR_RCT), in any transfer syntax pydicom decodes with the
installed handlers (uncompressed, RLE, JPEG baseline, JPEG-LS, JPEG 2000). YCbCr pixels are
converted to RGB by pydicom. Everything else is refused with the reason (ImageRejected).

Only ``KEPT_ATTRIBUTES`` leave this module (``DicomReference``); patient name, id, birth date and
every other attribute of the file are dropped with it, and the pixels are stored as a new PNG.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dermscreen.worker.imagestore import ImageRejected

PREAMBLE = 128
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# SOP classes whose instances are photographs of the skin (or a capture of one).
PHOTOGRAPHIC_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}
# Dermoscopy, external-camera photography, other; "" when the attribute is absent.
PHOTOGRAPHIC_MODALITIES = {"DMS", "XC", "OT", ""}
COLOUR_INTERPRETATIONS = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}
# The attributes kept with the image (DicomReference's fields, by DICOM keyword).
KEPT_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True)
class DicomReference:
    """Where a result goes back to: the source instance's UIDs (no patient identifier)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str

    def as_dict(self) -> dict:
        return asdict(self)


def is_dicom(path: Path) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    with open(path, "rb") as handle:
        handle.seek(PREAMBLE)
        return handle.read(4) == b"DICM"


def _read(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as error:
        raise ImageRejected(f"corrupt DICOM file: {error}") from error


def is_dicomdir(path: Path) -> bool:
    """True for the DICOMDIR index of a DICOM media layout (it holds no image; the instances it
    lists are files of their own beside it)."""
    if not is_dicom(path):
        return False
    try:
        meta = _read(path, stop_before_pixels=True).file_meta
    except ImageRejected:
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def _refusal(dataset) -> str | None:
    """Why the instance is not a photograph this service screens, or None."""
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class not in PHOTOGRAPHIC_CLASSES:
        from pydicom.uid import UID

        name = UID(sop_class).name if sop_class else "no SOP class"
        return f"DICOM {name} is not a photographic image (accepted: dermoscopic, VL " \
               f"photographic and secondary capture images)"
    modality = str(dataset.get("Modality", "")).upper()
    if modality not in PHOTOGRAPHIC_MODALITIES:
        return f"DICOM modality {modality} is not photographic (accepted: DMS, XC, OT)"
    if "PixelData" not in dataset:
        return "DICOM file without pixel data"
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return f"multi-frame DICOM ({frames} frames): send one frame per instance"
    interpretation = str(dataset.get("PhotometricInterpretation", ""))
    if interpretation not in COLOUR_INTERPRETATIONS or dataset.get("SamplesPerPixel") != 3:
        return f"DICOM photometric interpretation {interpretation or 'missing'} is not a " \
               f"colour photograph (accepted: RGB, YBR_FULL, YBR_FULL_422)"
    if dataset.get("BitsAllocated") != 8:
        return f"DICOM with {dataset.get('BitsAllocated')} bits per sample (accepted: 8)"
    return None


def reference_of(dataset) -> DicomReference:
    return DicomReference(*(str(dataset.get(keyword, "")) for keyword in KEPT_ATTRIBUTES))


def read_dicom(path: Path, max_pixels: int) -> tuple[Image.Image, DicomReference]:
    """The instance's RGB pixels (no metadata) and its references; ImageRejected with the reason
    when it is not a single-frame colour photograph or cannot be decoded."""
    from pydicom.pixels import pixel_array

    dataset = _read(path)
    reason = _refusal(dataset)
    if reason:
        raise ImageRejected(reason)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if rows * columns > max_pixels:
        raise ImageRejected(f"decompression bomb: {rows}x{columns} DICOM pixels pass the limit "
                            f"of {max_pixels}")
    try:
        # as_rgb: YCbCr (stored, or produced by a JPEG decoder) is converted to RGB by pydicom.
        pixels = pixel_array(dataset, as_rgb=True)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError, KeyError) as error:
        raise ImageRejected(f"DICOM pixel data cannot be decoded: {error}") from error
    if pixels.shape != (rows, columns, 3):
        raise ImageRejected(f"DICOM pixel data of shape {pixels.shape}, expected "
                            f"{(rows, columns, 3)}")
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB"), \
        reference_of(dataset)


def dicom_to_png(path: Path, target: Path, max_pixels: int) -> DicomReference:
    """Write the instance's pixels alone to ``target`` as PNG (for the image store); return its
    references."""
    pixels, reference = read_dicom(path, max_pixels)
    pixels.save(target, format="PNG")
    return reference
