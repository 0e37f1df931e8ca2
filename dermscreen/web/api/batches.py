"""Batches: submit (multipart), list, progress, results (JSON, CSV, FHIR, PDF, HTML, DICOM SR),
one image's result (JSON, FHIR, DICOM SR)."""

from __future__ import annotations

from flask import Response, current_app, g, jsonify, request, url_for

from dermscreen import results
from dermscreen.db import audit
from dermscreen.db.screening import Batch, Image
from dermscreen.exports.content import batch_content, export_row, model_headline
from dermscreen.exports.formats import (BATCH_FORMATS, IMAGE_FORMATS, NothingToExport,
                                        render_batch, render_image)
from dermscreen.results import current_prediction
from dermscreen.storage import store_for
from dermscreen.submissions import UploadRefused, check_upload, submit_batch
from dermscreen.web.api import bp
from dermscreen.web.api.auth import audit_list, owned
from dermscreen.web.api.errors import abort
from dermscreen.web.api.paging import page_args
from dermscreen.web.extensions import database
from dermscreen.worker.dispatch import enqueue_ingest


@bp.post("/batches")
def create_batch():
    if request.mimetype != "multipart/form-data":
        abort(415, "send multipart/form-data with one or more 'files' fields")
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        abort(413, f"upload of {request.content_length} bytes exceeds the limit of {limit} bytes")
    uploads = [(upload.filename, upload.stream) for upload in request.files.getlist("files")]
    metadata = request.files.get("metadata")
    metadata_stream = metadata.stream if metadata is not None else None
    try:
        check_upload(uploads, metadata_stream)
    except UploadRefused as refused:
        abort(refused.status, str(refused), refused.reasons)
    config = current_app.config["DERMSCREEN"]
    session = database.session
    batch = submit_batch(session, config, g.token.hospital_id, uploads, metadata_stream,
                         token_id=g.token.id, user_id=g.token.user_id)
    session.commit()
    enqueue_ingest(config, batch.id)
    location = url_for(".get_batch", batch_id=batch.id)
    body = results.batch_summary(session, batch) | {"files": len(uploads), "location": location}
    return jsonify(body), 202, {"Location": location}


@bp.get("/batches")
def list_batches():
    limit, offset = page_args()
    rows = results.hospital_batches(database.session, g.token.hospital_id, limit, offset)
    audit_list("view_batches", shown=len(rows), limit=limit, offset=offset)
    return jsonify({"batches": rows, "limit": limit, "offset": offset})


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str):
    batch = owned(Batch, batch_id)
    return jsonify(results.batch_summary(database.session, batch))


def _format(allowed: tuple[str, ...]) -> str:
    """The ``format`` asked for (default json; ``Accept: text/csv`` selects csv where allowed)."""
    if "format" in request.args:
        wanted = request.args["format"].lower()
        if wanted not in allowed:
            abort(400, f"format must be one of {', '.join(allowed)}, not {wanted!r}")
        return wanted
    if "csv" in allowed:
        best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
        return "csv" if best == "text/csv" else "json"
    return "json"


def _exported(render, *args, filename: str) -> Response:
    try:
        body, media_type, extension = render(*args)
    except NothingToExport as error:
        abort(404, str(error))
    return Response(body, mimetype=media_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}.{extension}"'})


@bp.get("/batches/<batch_id>/results")
def get_results(batch_id: str):
    batch = owned(Batch, batch_id)
    session = database.session
    wanted = _format(("json", "csv") + BATCH_FORMATS)
    audit.record(session, "view", batch, token_id=g.token.id, user_id=g.token.user_id,
                 what="results", format=wanted)
    session.commit()
    if wanted in BATCH_FORMATS:
        content = batch_content(session, batch, store_for(current_app.config["DERMSCREEN"]))
        return _exported(render_batch, content, wanted, filename=f"batch-{batch.id}-results")
    rows = results.batch_results(session, batch)
    if wanted == "csv":
        return Response(results.results_csv(rows), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="batch-{batch.id}-results.csv"'})
    return jsonify({"batch": results.batch_summary(session, batch), "results": rows})


@bp.get("/images/<image_id>")
def get_image(image_id: str):
    image = owned(Image, image_id)
    session = database.session
    wanted = _format(("json",) + IMAGE_FORMATS)
    audit.record(session, "view", image, token_id=g.token.id, user_id=g.token.user_id,
                 **({} if wanted == "json" else {"format": wanted}))
    session.commit()
    if wanted in IMAGE_FORMATS:
        prediction = current_prediction(image)
        model = model_headline(prediction.model_version) if prediction else None
        return _exported(render_image, export_row(session, image), model, wanted,
                         filename=f"image-{image.id}")
    return jsonify(results.image_result(session, image))
