"""DICOM files that tests write themselves: one photograph in several transfer syntaxes and
colour spaces, refused kinds (multi-frame, CT), and a DICOMDIR layout. Every file carries a
patient name and id (``PATIENT_NAME``, ``PATIENT_ID``) that must never be stored.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

PATIENT_NAME = "Doe^Jane^Quinella"
PATIENT_ID = "PID-86753090"
DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
# name -> (transfer syntax, photometric interpretation) of the kinds ``photograph`` writes.
KINDS = {
    "rgb-explicit": ("1.2.840.10008.1.2.1", "RGB"),
    "rgb-implicit": ("1.2.840.10008.1.2", "RGB"),
    "ybr-full": ("1.2.840.10008.1.2.1", "YBR_FULL"),
    "ybr-full-422": ("1.2.840.10008.1.2.1", "YBR_FULL_422"),
    "rgb-rle": ("1.2.840.10008.1.2.5", "RGB"),
    "rgb-jpeg2000-lossless": ("1.2.840.10008.1.2.4.90", "RGB"),
    "rgb-jpegls-lossless": ("1.2.840.10008.1.2.4.80", "RGB"),
    "jpeg-baseline-ybr-422": ("1.2.840.10008.1.2.4.50", "YBR_FULL_422"),
}


def _dataset(rows: int, columns: int, sop_class: str = DERMOSCOPIC, modality: str = "DMS"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.PatientName, dataset.PatientID = PATIENT_NAME, PATIENT_ID
    dataset.PatientBirthDate, dataset.AccessionNumber = "19700101", "ACC-4242"
    dataset.StudyTime = "101500"
    dataset.StudyDate, dataset.StudyID, dataset.SeriesNumber, dataset.InstanceNumber = \
        "20261202", "1", 1, 1
    dataset.Modality = modality
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel, dataset.PlanarConfiguration = 3, 0
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    return dataset


def _ybr_422_bytes(ybr: np.ndarray) -> bytes:
    """Uncompressed YBR_FULL_422: Y1 Y2 Cb Cr for each horizontal pair (chroma averaged)."""
    pairs = ybr.reshape(ybr.shape[0], ybr.shape[1] // 2, 2, 3).astype(np.float64)
    chroma = np.round(pairs[:, :, :, 1:].mean(axis=2)).astype(np.uint8)
    out = np.concatenate([pairs[:, :, :, 0].astype(np.uint8), chroma], axis=2)
    return out.tobytes()


def photograph(pixels: np.ndarray, kind: str, **dataset_args):
    """A single-frame DICOM dataset of ``pixels`` (rows x columns x 3, RGB, even width) written
    as ``kind`` (a key of KINDS)."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import convert_color_space

    syntax, interpretation = KINDS[kind]
    rows, columns, _ = pixels.shape
    dataset = _dataset(rows, columns, **dataset_args)
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.PhotometricInterpretation = interpretation
    if kind == "jpeg-baseline-ybr-422":
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, subsampling="4:2:2")
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.LossyImageCompression = "01"
        return dataset
    if interpretation == "YBR_FULL":
        dataset.PixelData = convert_color_space(pixels, "RGB", "YBR_FULL").tobytes()
    elif interpretation == "YBR_FULL_422":
        dataset.PixelData = _ybr_422_bytes(convert_color_space(pixels, "RGB", "YBR_FULL"))
    else:
        dataset.PixelData = pixels.tobytes()
    if syntax in ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"):
        dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        dataset.compress(syntax)
    return dataset


def _ybr_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """YBR_FULL to RGB by the formula of DICOM PS3.3 C.7.6.3.1.2 (not pydicom's code)."""
    y, cb, cr = (ybr[..., channel].astype(np.float64) for channel in range(3))
    rgb = np.stack([y + 1.402 * (cr - 128),
                    y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                    y + 1.772 * (cb - 128)], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def expected_pixels(pixels: np.ndarray, kind: str) -> np.ndarray:
    """The pixels another decoder sees in ``photograph(pixels, kind)``: the same pixels for the
    lossless RGB kinds, the stored YCbCr (chroma shared by each pair of pixels for 4:2:2)
    converted by the standard's formula, Pillow's decoding of the same JPEG stream for JPEG
    baseline."""
    from pydicom.pixels import convert_color_space

    if kind in ("ybr-full", "ybr-full-422"):
        ybr = convert_color_space(pixels, "RGB", "YBR_FULL")
        if kind == "ybr-full-422":
            stored = np.frombuffer(_ybr_422_bytes(ybr), dtype=np.uint8)
            quads = stored.reshape(ybr.shape[0], ybr.shape[1] // 2, 4)
            ybr = np.empty_like(ybr)
            ybr[..., 0] = quads[..., :2].reshape(ybr.shape[0], ybr.shape[1])
            ybr[..., 1] = np.repeat(quads[..., 2], 2, axis=1)
            ybr[..., 2] = np.repeat(quads[..., 3], 2, axis=1)
        return _ybr_to_rgb(ybr)
    if kind != "jpeg-baseline-ybr-422":
        return pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, subsampling="4:2:2")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def multi_frame(pixels: np.ndarray, frames: int = 2):
    dataset = photograph(np.concatenate([pixels] * frames), "rgb-explicit")
    dataset.Rows, dataset.NumberOfFrames = pixels.shape[0], frames
    return dataset


def ct_slice(rows: int = 32, columns: int = 32):
    dataset = _dataset(rows, columns, sop_class=CT_IMAGE, modality="CT")
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    del dataset.PlanarConfiguration
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelData = np.zeros((rows, columns), dtype=np.uint16).tobytes()
    return dataset


def dicom_bytes(dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicomdir(root: Path, datasets: list) -> dict[str, bytes]:
    """Write ``datasets`` as a DICOMDIR layout under ``root`` (``DICOMDIR`` and the instances in
    ``DICOM/...`` folders, names without extensions); return every file's bytes by its path
    relative to ``root``."""
    from pydicom.fileset import FileSet

    fileset = FileSet()
    for dataset in datasets:
        fileset.add(dataset)
    fileset.write(root)
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}
