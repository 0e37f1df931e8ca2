"""Results in hospital formats, per batch and per image: FHIR R4 JSON (``fhir``), DICOM
Structured Reports for DICOM inputs (``sr``) and a batch report for people, PDF and HTML
(``report``). Each reads what ``content`` gathers from the database.

    content = batch_content(session, batch, store_for(config))
    text = fhir.batch_bundle_json(content)         # DiagnosticReport + one Observation per image
    pdf = report.batch_pdf(content)                # bytes
"""
