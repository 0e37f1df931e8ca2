"""Results in hospital formats over the API: a batch as FHIR, PDF, HTML and a zip of SRs, one
image as FHIR or SR; another hospital's token sees none of it."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pypdf import PdfReader
from sqlalchemy import select

from dermscreen.db import AuditEntry, Batch
from dermscreen.db.tenancy import Hospital
from tests.exports.conftest import screened, submit, worker_config  # noqa: F401 (fixtures)


@pytest.fixture
def headers(sessions, make_token, screened):  # noqa: F811
    """A token of the hospital that submitted the screened batch."""
    with sessions() as session:
        hospital = session.get(Hospital, session.get(Batch, screened.batch_id).hospital_id)
        _, plaintext = make_token(hospital)
    return {"Authorization": f"Bearer {plaintext}"}


def test_batch_results_in_each_hospital_format(client, sessions, screened, headers):  # noqa: F811
    url = f"/api/v1/batches/{screened.batch_id}/results"

    response = client.get(f"{url}?format=fhir", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    bundle = Bundle.model_validate_json(response.data)
    assert len(bundle.entry) == 1 + len(screened.images)

    response = client.get(f"{url}?format=pdf", headers=headers)
    assert response.mimetype == "application/pdf"
    assert f"batch-{screened.batch_id}-results.pdf" in response.headers["Content-Disposition"]
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.data)).pages)
    assert "red.dcm" in text

    response = client.get(f"{url}?format=html", headers=headers)
    assert response.mimetype == "text/html" and "Alerts (1)" in response.text

    response = client.get(f"{url}?format=sr", headers=headers)
    assert response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        studies = {pydicom.dcmread(io.BytesIO(archive.read(name))).StudyInstanceUID
                   for name in archive.namelist()}
    assert studies == {dataset.StudyInstanceUID for dataset in screened.sources.values()}

    with sessions() as session:
        formats = [entry.detail["format"] for entry in session.scalars(
            select(AuditEntry).where(AuditEntry.object_id == screened.batch_id,
                                     AuditEntry.action == "view")
            .order_by(AuditEntry.id))]
    assert formats == ["fhir", "pdf", "html", "sr"]


def test_one_image_as_fhir_or_sr(client, screened, headers):  # noqa: F811
    red = screened.images["red.dcm"]
    response = client.get(f"/api/v1/images/{red}?format=fhir", headers=headers)
    assert Observation.model_validate_json(response.data).id == red

    response = client.get(f"/api/v1/images/{red}?format=sr", headers=headers)
    assert response.mimetype == "application/dicom"
    dataset = pydicom.dcmread(io.BytesIO(response.data))
    assert dataset.StudyInstanceUID == screened.sources["red.dcm"].StudyInstanceUID

    body = client.get(f"/api/v1/images/{red}", headers=headers).json
    assert body["dicom"]["sop_instance_uid"] == screened.sources["red.dcm"].SOPInstanceUID

    response = client.get(f"/api/v1/images/{screened.images['blue.png']}?format=sr",
                          headers=headers)
    assert response.status_code == 404 and "did not come in as DICOM" in response.json["reason"]
    response = client.get(f"/api/v1/images/{red}?format=pdf", headers=headers)
    assert response.status_code == 400


def test_another_hospitals_token_gets_no_export(client, make_token, screened):  # noqa: F811
    _, plaintext = make_token()
    response = client.get(f"/api/v1/batches/{screened.batch_id}/results?format=pdf",
                          headers={"Authorization": f"Bearer {plaintext}"})
    assert response.status_code == 404


def test_dicom_posted_to_the_api_is_screened_and_its_metadata_reaches_the_fhir(
        client, monkeypatch, config, make_token):
    import numpy as np

    from dermscreen.worker import jobs
    from tests.dicom_files import dicom_bytes, photograph
    from tests.factories import RED, lesion_image

    monkeypatch.setattr("dermscreen.web.api.batches.enqueue_ingest", lambda *args: None)
    _, plaintext = make_token()
    source = photograph(np.asarray(lesion_image(RED)), "rgb-jpegls-lossless")
    response = client.post("/api/v1/batches", headers={"Authorization": f"Bearer {plaintext}"},
                           data={"files": [(io.BytesIO(dicom_bytes(source)), "lesion.dcm")],
                                 "metadata": (io.BytesIO(b"image,site\nlesion,scalp\n"),
                                              "metadata.csv")})
    assert response.status_code == 202, response.json
    batch_id = response.json["id"]
    for chunk in jobs.run_ingest(config, batch_id):
        jobs.run_predict_chunk(config, chunk)

    text = client.get(f"/api/v1/batches/{batch_id}/results?format=fhir",
                      headers={"Authorization": f"Bearer {plaintext}"}).data
    observation = Bundle.model_validate_json(text).entry[1].resource
    components = {c.code.coding[0].code: c.valueString for c in observation.component}
    assert components["metadata-site"] == "scalp" and components["tier"] == "alert"
    assert observation.derivedFrom[0].identifier.value == f"urn:oid:{source.StudyInstanceUID}"
