"""The review loop on the pages: model flags against reviews, and the reviewed-cases export."""

from __future__ import annotations

from flask import Response, current_app, render_template
from flask_login import current_user

from dermscreen import reviews
from dermscreen.db import audit
from dermscreen.db.tenancy import Role
from dermscreen.web.auth.access import audit_scope, role_required
from dermscreen.web.extensions import database
from dermscreen.web.pages import bp


@bp.route("/reviews")
@role_required(Role.DERMATOLOGIST, Role.ADMIN)
def feedback():
    stats = reviews.agreement(database.session, current_user.hospital_id)
    audit.record(database.session, "view_agreement", audit_scope(), user_id=current_user.id,
                 hospital_id=current_user.hospital_id, reviewed=stats.reviewed)
    database.session.commit()
    return render_template("pages/feedback.html", stats=stats)



@bp.route("/reviews/export.zip")
@role_required(Role.DERMATOLOGIST, Role.ADMIN)
def export_reviews():
    """Reviewed cases as a zip: ``reviewed/labels.csv``, ``excluded.csv`` and ``images/``."""
    data = reviews.export_zip(database.session, current_app.config["DERMSCREEN"],
                              current_user.hospital_id)
    audit.record(database.session, "export_reviews", audit_scope(), user_id=current_user.id,
                 hospital_id=current_user.hospital_id, bytes=len(data))
    database.session.commit()
    return Response(data, mimetype="application/zip", headers={
        "Content-Disposition": 'attachment; filename="reviewed-cases.zip"'})
