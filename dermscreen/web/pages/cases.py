"""The case page: one image large, its heatmap, every class's probability, alerts and reviews."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from dermscreen import results
from dermscreen.db import audit
from dermscreen.db.alerts import Alert
from dermscreen.db.review import Decision, Review
from dermscreen.db.screening import Image
from dermscreen.db.tenancy import Role, User
from dermscreen.training.datasets import CLASSES
from dermscreen.web.auth.access import role_required, tenant_get
from dermscreen.web.extensions import database
from dermscreen.web.pages import bp
from dermscreen.web.pages.forms import ReviewForm
from dermscreen.worker import dispatch

ANYONE = (Role.SUBMITTER, Role.DERMATOLOGIST, Role.ADMIN)


def _classes(image: Image) -> list[str]:
    prediction = results.current_prediction(image)
    return list(prediction.model_version.classes) if prediction else list(CLASSES)


def _render_case(image: Image, form: ReviewForm, status: int = 200):
    session = database.session
    row = results.image_result(session, image)
    probabilities = sorted((row["probabilities"] or {}).items(), key=lambda item: -item[1])
    reviews = session.execute(
        select(Review, User).join(User, Review.reviewer_id == User.id)
        .where(Review.image_id == image.id).order_by(Review.created_at.desc(), Review.id.desc())
    ).all()
    alerts = session.scalars(select(Alert).where(Alert.image_id == image.id).order_by(Alert.id)).all()
    return render_template("pages/case.html", image=image, row=row, probabilities=probabilities,
                           reviews=reviews, alerts=alerts, form=form), status


@bp.route("/cases/<image_id>")
@role_required(*ANYONE)
def case(image_id: str):
    image = tenant_get(Image, image_id)
    audit.record(database.session, "view", image, user_id=current_user.id)
    database.session.commit()
    return _render_case(image, ReviewForm(_classes(image)))


@bp.route("/cases/<image_id>/review", methods=["POST"])
@role_required(Role.DERMATOLOGIST)
def review(image_id: str):
    image = tenant_get(Image, image_id)
    form = ReviewForm(_classes(image))
    if not form.validate_on_submit():
        return _render_case(image, form, 400)
    decision = Decision(form.decision.data)
    entry = Review(image_id=image.id, reviewer_id=current_user.id, decision=decision,
                   diagnosis=form.diagnosis.data if decision is Decision.OTHER else None,
                   notes=form.notes.data or "")
    database.session.add(entry)
    database.session.flush()
    audit.record(database.session, "review", entry, user_id=current_user.id,
                 hospital_id=image.hospital_id, image_id=image.id, decision=decision.value,
                 diagnosis=entry.diagnosis)
    database.session.commit()
    flash(f"Review saved: {dict(form.decision.choices)[decision.value]}.", "success")
    return redirect(url_for("pages.case", image_id=image.id), code=303)


@bp.route("/cases/<image_id>/heatmap", methods=["POST"])
@role_required(Role.DERMATOLOGIST, Role.ADMIN)
def request_heatmap(image_id: str):
    """Ask the worker for this image's heatmap (flagged images get one without asking)."""
    image = tenant_get(Image, image_id)
    audit.record(database.session, "request_heatmap", image, user_id=current_user.id)
    database.session.commit()
    dispatch.enqueue_heatmaps(current_app.config["DERMSCREEN"], [image.id])
    flash("Heatmap requested; reload the page in a few seconds.", "info")
    return redirect(url_for("pages.case", image_id=image.id), code=303)
