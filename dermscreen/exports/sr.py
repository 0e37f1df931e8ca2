"""DICOM Comprehensive SR (highdicom) for one image that came in as DICOM: the result, filed in
the source instance's study and referencing the instance.

    data = image_sr(row, model)     # bytes of a Part 10 file; row: a content row with ``dicom``

The SR's evidence and its image reference are the source instance's UIDs, the only DICOM
attributes the service keeps; so its patient and study identification attributes are present but
empty (no identifier is stored to copy), and the receiving archive reconciles it by Study Instance
UID. Content, under a "Diagnostic imaging report" container: the source image, the melanoma
probability (UCUM ``1``), the tier, the most probable diagnosis, the gate status, the algorithm
name and version, the error of an image without a score and each column of the hospital's
metadata CSV (one ``key: value`` text item each). Our own concepts are coded in the private
scheme ``99DERMSCREEN`` (MELPROB, TIER, TOPDX, STATUS, REASON, METADATA).
"""

from __future__ import annotations

import io
import uuid

from dermscreen.exports.content import BatchContent

PRIVATE_SCHEME = "99DERMSCREEN"
# Type 2 attributes the SR's patient and study modules copy from the evidence: kept empty.
EMPTY_IDENTIFICATION = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID",
                        "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName")


class NotFromDicom(ValueError):
    """The image did not come in as DICOM, so there is no instance for an SR to reference."""


def _uid(*parts: str) -> str:
    """A stable UID under 2.25 (UUID-derived) for this image's SR series or instance."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, ':'.join(('dermscreen-sr',) + parts)).int}"


def _evidence(dicom: dict):
    from pydicom.dataset import Dataset

    evidence = Dataset()
    evidence.StudyInstanceUID = dicom["study_uid"]
    evidence.SeriesInstanceUID = dicom["series_uid"]
    evidence.SOPInstanceUID = dicom["sop_instance_uid"]
    evidence.SOPClassUID = dicom["sop_class_uid"]
    for keyword in EMPTY_IDENTIFICATION:
        setattr(evidence, keyword, "")
    return evidence


def _content(row: dict, model: dict | None):
    import highdicom as hd
    from pydicom.sr.coding import Code

    contains = hd.sr.RelationshipTypeValues.CONTAINS

    def text(code: str, meaning: str, value: str, scheme: str = PRIVATE_SCHEME):
        return hd.sr.TextContentItem(name=Code(code, scheme, meaning), value=value[:1024],
                                     relationship_type=contains)

    dicom = row["dicom"]
    items = [hd.sr.ImageContentItem(name=Code("121112", "DCM", "Source of Measurement"),
                                    referenced_sop_class_uid=dicom["sop_class_uid"],
                                    referenced_sop_instance_uid=dicom["sop_instance_uid"],
                                    relationship_type=contains)]
    if row["melanoma_probability"] is not None:
        items.append(hd.sr.NumContentItem(
            name=Code("MELPROB", PRIVATE_SCHEME, "Melanoma probability"),
            value=round(row["melanoma_probability"], 6), unit=Code("1", "UCUM", "no units"),
            relationship_type=contains))
    if row["tier"]:
        items.append(text("TIER", "Screening tier", row["tier"]))
    if row["diagnosis"]:
        items.append(text("TOPDX", "Most probable diagnosis", row["diagnosis"]))
    gate = {"done": "passed", "unassessable": "unassessable"}.get(row["status"])
    items.append(text("STATUS", "Screening status", gate or row["status"]))
    if row["error"]:
        items.append(text("REASON", "Reason", row["error"]))
    version = row.get("model_version") or (model or {}).get("version")
    if model:
        items.append(text("111001", "Algorithm Name", model["name"], "DCM"))
    if version:
        items.append(text("111003", "Algorithm Version", version, "DCM"))
    for key, value in sorted((row.get("details") or {}).items()):
        items.append(text("METADATA", "Submitted metadata", f"{key}: {value}"))
    root = hd.sr.ContainerContentItem(name=Code("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    return root


def image_sr(row: dict, model: dict | None) -> bytes:
    """The SR of one image (a content row), as a DICOM Part 10 file."""
    import highdicom as hd

    if not row.get("dicom"):
        raise NotFromDicom(f"{row['image']} did not come in as DICOM: no instance to reference")
    dicom = row["dicom"]
    report = hd.sr.ComprehensiveSR(
        evidence=[_evidence(dicom)], content=_content(row, model),
        series_instance_uid=_uid(dicom["series_uid"], "series"), series_number=9901,
        sop_instance_uid=_uid(row["image_id"], (model or {}).get("version", "")),
        instance_number=1, manufacturer="dermscreen",
        series_description="dermscreen melanoma screening", is_complete=True, is_final=False,
        is_verified=False)
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def batch_srs(content: BatchContent) -> dict[str, bytes]:
    """One SR per image of the batch that came in as DICOM, by ``<image_id>.dcm``."""
    return {f"{row['image_id']}.dcm": image_sr(row, content.model)
            for row in content.rows if row.get("dicom")}
