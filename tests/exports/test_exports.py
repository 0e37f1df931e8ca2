"""FHIR, DICOM SR and the PDF and HTML batch report, read back the way a hospital reads them."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError
from pypdf import PdfReader

from dermscreen.exports import fhir, report, sr
from dermscreen.exports.content import INTENDED_USE
from dermscreen.exports.formats import NothingToExport, render_batch, render_image
from tests.dicom_files import PATIENT_ID, PATIENT_NAME


def rows_by_name(screened) -> dict[str, dict]:
    return {row["image"]: row for row in screened.content.rows}


def test_fhir_bundle_validates_and_carries_every_image_result(screened):
    text = fhir.batch_bundle_json(screened.content)
    bundle = Bundle.model_validate_json(text)  # raises on anything FHIR R4(B) does not allow

    assert bundle.type == "collection"
    report_entry, *observation_entries = bundle.entry
    diagnostic = report_entry.resource
    assert diagnostic.get_resource_type() == "DiagnosticReport"
    assert diagnostic.status == "final"
    assert [ref.reference for ref in diagnostic.result] == [e.fullUrl for e in observation_entries]
    studies = {ref.identifier.value for ref in diagnostic.imagingStudy}
    assert studies == {f"urn:oid:{d.StudyInstanceUID}" for d in screened.sources.values()}
    assert "St. Elsewhere" in diagnostic.conclusion

    observations = {o.resource.note[0].text.removeprefix("image "): o.resource
                    for o in observation_entries}
    assert set(observations) == {"red.dcm", "purple.dcm", "blue.png", "grey.png", "notes.jpg"}
    rows = rows_by_name(screened)
    red = observations["red.dcm"]
    components = {c.code.coding[0].code: c for c in red.component}
    assert float(red.valueQuantity.value) == pytest.approx(rows["red.dcm"]["melanoma_probability"],
                                                           abs=1e-6)
    assert components["tier"].valueString == "alert"
    assert components["top-diagnosis"].valueString == "melanoma"
    assert components["gate-status"].valueString == "passed"
    assert components["model-version"].valueString == "test-1"
    assert components["metadata-site"].valueString == "back"
    assert components["metadata-age"].valueString == "61"
    source = screened.sources["red.dcm"]
    assert red.derivedFrom[0].identifier.value == f"urn:oid:{source.StudyInstanceUID}"
    assert source.SOPInstanceUID in red.derivedFrom[0].display
    assert {c.code.coding[0].code: c.valueString
            for c in observations["blue.png"].component}["metadata-site"] == "arm"
    assert observations["blue.png"].derivedFrom is None

    grey = observations["grey.png"]
    assert grey.valueQuantity is None and "uniform field" in grey.dataAbsentReason.text
    assert {c.code.coding[0].code: c.valueString for c in grey.component}["gate-status"] == \
        "unassessable"
    failed = observations["notes.jpg"]
    assert failed.status == "cancelled" and "not a recognised image" in failed.dataAbsentReason.text
    assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_fhir_validation_refuses_what_r4_does_not_allow(screened):
    resource = fhir.observation_resource(rows_by_name(screened)["red.dcm"], screened.content.model)
    Observation.model_validate(resource)
    with pytest.raises(ValidationError):
        Observation.model_validate(resource | {"valueQuantity": {"value": "very high"}})
    with pytest.raises(ValidationError):
        Observation.model_validate(resource | {"tier": "alert"})  # no such element


def test_one_image_as_fhir_observation(screened):
    row = rows_by_name(screened)["purple.dcm"]
    body, media_type, _ = render_image(row, screened.content.model, "fhir")
    observation = Observation.model_validate_json(body)
    assert media_type == "application/fhir+json"
    assert observation.id == row["image_id"]
    assert {c.code.coding[0].code: c.valueString for c in observation.component}["tier"] == \
        "review"


def test_sr_parses_back_with_the_source_references(screened):
    import highdicom as hd

    rows = rows_by_name(screened)
    for name, source in screened.sources.items():
        data = sr.image_sr(rows[name], screened.content.model)
        dataset = pydicom.dcmread(io.BytesIO(data))
        assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        evidence = dataset.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == source.StudyInstanceUID
        series = evidence.ReferencedSeriesSequence[0]
        assert series.SeriesInstanceUID == source.SeriesInstanceUID
        assert (series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
                series.ReferencedSOPSequence[0].ReferencedSOPClassUID) == (
                    source.SOPInstanceUID, source.SOPClassUID)
        items = {item.ConceptNameCodeSequence[0].CodeValue: item
                 for item in dataset.ContentSequence}
        assert items["121112"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
            source.SOPInstanceUID
        assert float(items["MELPROB"].MeasuredValueSequence[0].NumericValue) == pytest.approx(
            rows[name]["melanoma_probability"], abs=1e-5)
        assert items["TIER"].TextValue == rows[name]["tier"]
        assert items["111003"].TextValue == "test-1"
        assert str(dataset.PatientName) == "" and dataset.PatientID == ""
        assert PATIENT_NAME.encode() not in data and PATIENT_ID.encode() not in data
        assert isinstance(hd.sr.srread(io.BytesIO(data)), hd.sr.ComprehensiveSR)
    red_items = [item.TextValue for item in pydicom.dcmread(io.BytesIO(
        sr.image_sr(rows["red.dcm"], screened.content.model))).ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "METADATA"]
    assert red_items == ["age: 61", "site: back"]


def test_sr_only_for_dicom_inputs(screened):
    with pytest.raises(NothingToExport):
        render_image(rows_by_name(screened)["blue.png"], screened.content.model, "sr")
    body, media_type, _ = render_batch(screened.content, "sr")
    import zipfile

    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = set(archive.namelist())
    assert media_type == "application/zip"
    assert names == {f"{screened.images[name]}.dcm" for name in screened.sources}


def test_pdf_report_lists_alerts_with_pictures_reasons_model_and_intended_use(screened):
    data = report.batch_pdf(screened.content)
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)

    assert "dermscreen batch report" in text
    assert f"Batch {screened.batch_id} (done), submitted by St. Elsewhere" in text
    assert " ".join(INTENDED_USE.split()[:12]) in text
    assert "Alerts (1)" in text and "red.dcm" in text and "site: back" in text
    assert "Review tier (1)" in text and "purple.dcm" in text
    assert "Cannot be assessed (1)" in text and "grey.png" in text and "uniform field" in text
    assert "Failed (1)" in text and "notes.jpg" in text and "not a recognised image" in text
    assert "Model tiny-test-model test-1" in text
    pictures = [image for page in reader.pages for image in page.images]
    assert len(pictures) == 2  # the alert's thumbnail and its heatmap


def test_html_report_holds_the_same_with_inline_pictures(screened):
    html = report.batch_html(screened.content)
    assert "Alerts (1)" in html and "red.dcm" in html and "site: back" in html
    assert html.count("data:image/png;base64,") == 2
    assert "uniform field" in html and "Failed (1)" in html
    assert INTENDED_USE in html


def test_report_shows_the_model_cards_headline_numbers(screened):
    from dermscreen.config import DEFAULT_BUNDLE
    from dermscreen.db import ModelVersion
    from dermscreen.exports.content import model_headline

    card = json.loads((DEFAULT_BUNDLE / "metadata.json").read_text())
    version = ModelVersion(version=card["version"], path="", classes=card["output"]["classes"],
                           alert_threshold=card["output"]["alert_threshold"], card=card)
    screened.content.model = model_headline(version)
    validation = card["metrics"]["validation"]
    auc = f"{validation['melanoma_auc']:.3f} ({validation['ci95']['melanoma_auc'][0]:.3f}-" \
          f"{validation['ci95']['melanoma_auc'][1]:.3f})"

    reader = PdfReader(io.BytesIO(report.batch_pdf(screened.content)))
    text = " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)
    assert "Model card headline numbers" in text
    assert auc in text and f"{validation['n']} ({validation['melanomas']})" in text
    assert auc in report.batch_html(screened.content)
