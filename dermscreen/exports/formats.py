"""The hospital formats by name, for the API and ``dermscreen screen --format``: what each
renders, its media type and its file extension.

    body, media_type, extension = render_batch(content, "pdf")
    body, media_type, extension = render_image(row, model, "fhir")
"""

from __future__ import annotations

import io
import zipfile

from dermscreen.exports import fhir, report, sr
from dermscreen.exports.content import BatchContent

BATCH_FORMATS = ("fhir", "pdf", "html", "sr")
IMAGE_FORMATS = ("fhir", "sr")
MEDIA_TYPES = {"fhir": ("application/fhir+json", "fhir.json"), "pdf": ("application/pdf", "pdf"),
               "html": ("text/html", "html"), "sr": ("application/dicom", "dcm"),
               "sr-zip": ("application/zip", "sr.zip")}


class NothingToExport(ValueError):
    """The format does not apply (an SR of a batch or image with no DICOM input)."""


def sr_zip(content: BatchContent) -> bytes:
    """One SR per DICOM image of the batch, in a zip; NothingToExport when there is none."""
    reports = sr.batch_srs(content)
    if not reports:
        raise NothingToExport("no image of this batch came in as DICOM: there is no SR to make")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in reports.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def render_batch(content: BatchContent, name: str) -> tuple[bytes, str, str]:
    """The batch in format ``name`` (one of BATCH_FORMATS): body, media type, file extension."""
    if name == "fhir":
        body = fhir.batch_bundle_json(content).encode()
    elif name == "pdf":
        body = report.batch_pdf(content)
    elif name == "html":
        body = report.batch_html(content).encode()
    elif name == "sr":
        body, name = sr_zip(content), "sr-zip"
    else:
        raise ValueError(f"unknown batch format {name!r}")
    return (body, *MEDIA_TYPES[name])


def render_image(row: dict, model: dict | None, name: str) -> tuple[bytes, str, str]:
    """One image (a content row) in format ``name`` (one of IMAGE_FORMATS)."""
    if name == "fhir":
        body = fhir.observation_json(row, model).encode()
    elif name == "sr":
        try:
            body = sr.image_sr(row, model)
        except sr.NotFromDicom as error:
            raise NothingToExport(str(error)) from error
    else:
        raise ValueError(f"unknown image format {name!r}")
    return (body, *MEDIA_TYPES[name])
