"""FHIR R4 JSON: a ``collection`` Bundle holding one DiagnosticReport for the batch and one
Observation per image; or one image's Observation alone.

    text = batch_bundle_json(content)        # dermscreen.exports.content.BatchContent
    text = observation_json(row, model)      # one image (a content row)

Every resource is built and validated with ``fhir.resources``' R4B models: DiagnosticReport,
Observation, Bundle, Reference and Identifier are the same in R4 (4.0.1) and R4B (4.3.0), and
only elements of R4 are used. An Observation's value is the melanoma probability (UCUM unit
``1``); its components are the tier, the most probable diagnosis, the gate status, the model
version and each column of the hospital's metadata CSV. An image that failed or that the gate
stopped has no value but a ``dataAbsentReason`` with the reason. An image from DICOM is
``derivedFrom`` its imaging study (by Study Instance UID, with its series and instance UIDs),
and the report lists the studies in ``imagingStudy``.
"""

from __future__ import annotations

import uuid

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from dermscreen.exports.content import BatchContent

# Our own code system and identifier namespaces (URIs), for what has no standard code.
CODE_SYSTEM = "urn:dermscreen:code"
IMAGE_IDENTIFIER = "urn:dermscreen:image"
BATCH_IDENTIFIER = "urn:dermscreen:batch"
DICOM_UID = "urn:dicom:uid"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Observation status by image status: scored or stopped by the gate are final.
OBSERVATION_STATUS = {"done": "final", "unassessable": "final", "failed": "cancelled",
                      "queued": "registered", "received": "registered"}


def _code(code: str, display: str) -> dict:
    return {"coding": [{"system": CODE_SYSTEM, "code": code, "display": display}],
            "text": display}


def _component(code: str, display: str, **value) -> dict:
    return {"code": _code(code, display), **value}


def study_reference(dicom: dict) -> dict:
    """A logical reference to the source instance's ImagingStudy (by Study Instance UID)."""
    return {"type": "ImagingStudy",
            "identifier": {"system": DICOM_UID, "value": f"urn:oid:{dicom['study_uid']}"},
            "display": f"series {dicom['series_uid']}, instance {dicom['sop_instance_uid']}"}


def observation_resource(row: dict, model: dict | None) -> dict:
    """One image's result (a content row) as an Observation, as plain JSON-ready data."""
    components = []
    gate = {"done": "passed", "unassessable": "unassessable"}.get(row["status"])
    if gate:
        components.append(_component("gate-status", "Gate status", valueString=gate))
    if row["tier"]:
        components.append(_component("tier", "Screening tier", valueString=row["tier"]))
    if row["diagnosis"]:
        components.append(_component("top-diagnosis", "Most probable diagnosis",
                                     valueString=row["diagnosis"]))
    for name, probability in sorted((row["probabilities"] or {}).items()):
        components.append(_component(f"probability-{name.replace(' ', '-')}",
                                     f"Probability of {name}",
                                     valueQuantity={"value": round(probability, 6),
                                                    "system": "http://unitsofmeasure.org",
                                                    "code": "1", "unit": "1"}))
    version = row.get("model_version") or (model or {}).get("version")
    if version:
        components.append(_component("model-version", "Model version", valueString=version))
    for key, value in sorted((row.get("details") or {}).items()):
        components.append(_component(f"metadata-{key}", f"Submitted metadata: {key}",
                                     valueString=str(value)))
    resource = {
        "resourceType": "Observation",
        "id": row["image_id"],
        "identifier": [{"system": IMAGE_IDENTIFIER, "value": row["image_id"]}],
        "status": OBSERVATION_STATUS.get(row["status"], "registered"),
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging",
                                  "display": "Imaging"}]}],
        "code": _code("melanoma-probability", "Melanoma probability (dermoscopy screening)"),
        "note": [{"text": f"image {row['image']}"}],
        "component": components or None,
    }
    if row["melanoma_probability"] is not None:
        resource["valueQuantity"] = {"value": round(row["melanoma_probability"], 6),
                                     "system": "http://unitsofmeasure.org", "code": "1",
                                     "unit": "1"}
    elif row["status"] in ("failed", "unassessable"):
        resource["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT, "code": "error" if row["status"] == "failed"
                        else "not-performed"}],
            "text": row["error"] or row["status"]}
    if row.get("dicom"):
        resource["derivedFrom"] = [study_reference(row["dicom"])]
    return Observation.model_validate({k: v for k, v in resource.items() if v is not None}) \
        .model_dump(mode="json", exclude_none=True)


def observation_json(row: dict, model: dict | None = None) -> str:
    return Observation.model_validate(observation_resource(row, model)).model_dump_json(indent=2)


def report_resource(content: BatchContent, observation_urls: list[str]) -> dict:
    summary, counts = content.summary, content.summary["counts"]
    studies = {row["dicom"]["study_uid"]: row["dicom"] for row in content.rows if row.get("dicom")}
    model = content.model or {}
    conclusion = (f"{counts['total']} images: {counts['flagged']} in the alert tier, "
                  f"{sum(row['tier'] == 'review' for row in content.rows)} in the review tier, "
                  f"{counts['unassessable']} cannot be assessed, {counts['failed']} failed, "
                  f"{counts['pending']} pending; model {model.get('name', '')} "
                  f"{model.get('version', '')}".rstrip())
    resource = {
        "resourceType": "DiagnosticReport",
        "id": summary["id"],
        "identifier": [{"system": BATCH_IDENTIFIER, "value": summary["id"]}],
        "status": "final" if summary["status"] == "done" else "partial",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "IMG", "display": "Diagnostic Imaging"}]}],
        "code": _code("melanoma-screening", "Melanoma screening of dermoscopic images"),
        "issued": content.generated_at,
        "performer": [{"display": f"dermscreen model {model.get('name', '')} "
                                  f"{model.get('version', '')}".rstrip()}] if model else None,
        "result": [{"reference": url, "type": "Observation"} for url in observation_urls],
        "imagingStudy": [study_reference(dicom) for dicom in studies.values()] or None,
        "conclusion": conclusion,
    }
    if content.hospital:
        resource["conclusion"] += f"; submitted by {content.hospital}"
    return {k: v for k, v in resource.items() if v is not None}


def full_url(namespace: str, identifier: str) -> str:
    """A stable ``urn:uuid:`` for a resource of this batch or image (the same on every export)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{namespace}:{identifier}')}"


def batch_bundle(content: BatchContent) -> Bundle:
    """The batch's DiagnosticReport and its Observations in a validated ``collection`` Bundle."""
    observations = [observation_resource(row, content.model) for row in content.rows]
    urls = [full_url(IMAGE_IDENTIFIER, row["image_id"]) for row in content.rows]
    report = DiagnosticReport.model_validate(report_resource(content, urls))
    entries = [{"fullUrl": full_url(BATCH_IDENTIFIER, content.summary["id"]),
                "resource": report.model_dump(mode="json", exclude_none=True)}]
    entries += [{"fullUrl": url, "resource": observation}
                for url, observation in zip(urls, observations)]
    return Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                  "timestamp": content.generated_at, "entry": entries})


def batch_bundle_json(content: BatchContent) -> str:
    return batch_bundle(content).model_dump_json(indent=2, exclude_none=True)
