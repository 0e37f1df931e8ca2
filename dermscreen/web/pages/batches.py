"""Uploads, the batch list, a batch's progress and results, and the results CSV."""

from __future__ import annotations

from flask import Response, current_app, flash, jsonify, redirect, render_template, url_for
from flask_login import current_user

from dermscreen import results, submissions
from dermscreen.db import audit
from dermscreen.db.screening import Batch, ImageStatus
from dermscreen.db.tenancy import Role
from dermscreen.web.auth.access import audit_scope, role_required, tenant_get
from dermscreen.web.extensions import database
from dermscreen.web.pages import bp
from dermscreen.web.pages.forms import UploadForm
from dermscreen.worker import dispatch

ANYONE = (Role.SUBMITTER, Role.DERMATOLOGIST, Role.ADMIN)
BATCH_LIST_LIMIT = 200


@bp.route("/")
@role_required(*ANYONE)
def home():
    if current_user.role is Role.DERMATOLOGIST:
        return redirect(url_for("pages.alerts"))
    if current_user.role is Role.ADMIN:
        return redirect(url_for("admin.index"))
    return redirect(url_for("pages.batches"))


@bp.route("/batches")
@role_required(*ANYONE)
def batches():
    # Admins have no hospital: they see every hospital's batches.
    rows = results.hospital_batches(database.session, current_user.hospital_id, BATCH_LIST_LIMIT)
    audit.record(database.session, "view_batches", audit_scope(), user_id=current_user.id,
                 hospital_id=current_user.hospital_id, shown=len(rows))
    database.session.commit()
    return render_template("pages/batches.html", batches=rows)


@bp.route("/upload", methods=["GET", "POST"])
@role_required(Role.SUBMITTER, Role.DERMATOLOGIST)
def upload():
    form = UploadForm()
    if not form.validate_on_submit():
        return render_template("pages/upload.html", form=form), 400 if form.errors else 200
    files = [(upload.filename, upload.stream) for upload in form.files.data if upload.filename]
    metadata = form.metadata.data.stream if form.metadata.data and form.metadata.data.filename else None
    try:
        submissions.check_upload(files, metadata)
    except submissions.UploadRefused as refused:
        for reason in refused.reasons:
            flash(reason, "error")
        return render_template("pages/upload.html", form=form), refused.status
    config = current_app.config["DERMSCREEN"]
    batch = submissions.submit_batch(database.session, config, current_user.hospital_id, files,
                                     metadata, user_id=current_user.id)
    database.session.commit()
    dispatch.enqueue_ingest(config, batch.id)  # only after the commit
    flash(f"Uploaded {len(files)} file(s); the batch is being screened.", "success")
    return redirect(url_for("pages.batch", batch_id=batch.id), code=303)


@bp.route("/batches/<batch_id>")
@role_required(*ANYONE)
def batch(batch_id: str):
    batch = tenant_get(Batch, batch_id)
    summary = results.batch_summary(database.session, batch)
    rows = results.batch_results(database.session, batch)
    audit.record(database.session, "view", batch, user_id=current_user.id)
    database.session.commit()
    # Images the gate stopped are listed apart, with the reasons, so that they can be re-imaged.
    unassessable = [row for row in rows if row["status"] == ImageStatus.UNASSESSABLE.value]
    rows = [row for row in rows if row["status"] != ImageStatus.UNASSESSABLE.value]
    return render_template("pages/batch.html", batch=batch, summary=summary, rows=rows,
                           unassessable=unassessable)


@bp.route("/batches/<batch_id>/progress")
@role_required(*ANYONE)
def batch_progress(batch_id: str):
    """Polled by the batch page: the batch's counters as JSON (see results.batch_summary)."""
    batch = tenant_get(Batch, batch_id)
    response = jsonify(results.batch_summary(database.session, batch))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/batches/<batch_id>/results.csv")
@role_required(*ANYONE)
def batch_csv(batch_id: str):
    batch = tenant_get(Batch, batch_id)
    text = results.results_csv(results.batch_results(database.session, batch))
    audit.record(database.session, "download", batch, user_id=current_user.id, format="csv")
    database.session.commit()
    return Response(text, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="batch-{batch.id}.csv"'})
