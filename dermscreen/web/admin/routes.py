"""Admin views: thin wrappers over ``dermscreen.accounts`` and ``dermscreen.registry``, audited."""

from __future__ import annotations

from flask import abort, current_app, flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from dermscreen import accounts, registry
from dermscreen.bundle import BundleError
from dermscreen.db import audit
from dermscreen.db.screening import ModelVersion
from dermscreen.db.tenancy import ApiToken, Hospital, Role, User
from dermscreen.web.admin import bp
from dermscreen.web.admin.curve import Mark, choices, curve_svg, read_off
from dermscreen.web.admin.forms import (HospitalForm, HospitalSettingsForm, ModelForm, ThresholdForm,
                                        TokenForm, UserForm)
from dermscreen.web.auth.access import role_required
from dermscreen.web.extensions import database
from dermscreen.worker.alerting import alert_threshold

admin_only = role_required(Role.ADMIN)


def _record(action: str, obj, **detail) -> None:
    audit.record(database.session, action, obj, user_id=current_user.id, **detail)


def _hospitals() -> list[Hospital]:
    return database.session.scalars(select(Hospital).order_by(Hospital.name)).all()


def _active_version() -> ModelVersion:
    """The model version that hospital thresholds set now are for."""
    return registry.active_version(database.session, current_app.config["DERMSCREEN"])


def _hospital_choices(empty: str | None = None) -> list[tuple[str, str]]:
    choices = [(str(hospital.id), hospital.name) for hospital in _hospitals()]
    return ([("", empty)] if empty is not None else []) + choices


@bp.route("/")
@admin_only
def index():
    session = database.session
    counts = {
        "hospitals": session.scalar(select(func.count(Hospital.id))),
        "users": session.scalar(select(func.count(User.id))),
        "live tokens": session.scalar(select(func.count(ApiToken.id)).where(ApiToken.revoked_at.is_(None))),
        "model versions": session.scalar(select(func.count(ModelVersion.id))),
    }
    active = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
    return render_template("admin/index.html", counts=counts, active=active)


@bp.route("/hospitals", methods=["GET", "POST"])
@admin_only
def hospitals():
    form = HospitalForm()
    status = 200
    if form.validate_on_submit():
        try:
            hospital = accounts.create_hospital(database.session, form.name.data.strip(),
                                                form.alert_threshold.data, form.webhook_url.data or None,
                                                _active_version())
            _record("create", hospital, name=hospital.name)
            database.session.commit()
        except IntegrityError:
            database.session.rollback()
            form.name.errors.append("A hospital of that name exists.")
            status = 400
        else:
            flash(f"Hospital {hospital.name} created.", "success")
            return redirect(url_for("admin.hospitals"), code=303)
    elif form.errors:
        status = 400
    hospitals = _hospitals()
    settings = {hospital.id: HospitalSettingsForm(obj=hospital, prefix=f"h{hospital.id}")
                for hospital in hospitals}
    active = _active_version()
    curve = registry.operating_curve(active).get("points")
    # what each hospital can expect at the threshold in force, read off the validation curve
    expected = {hospital.id: read_off(curve, alert_threshold(hospital, active))
                for hospital in hospitals} if curve else {}
    return render_template("admin/hospitals.html", form=form, hospitals=hospitals, settings=settings,
                           active=active, curve=curve, expected=expected,
                           points=[] if curve else registry.validation_operating_points(active)), status


def _marks(hospital: Hospital, version: ModelVersion) -> list[Mark]:
    """The thresholds drawn on ``version``'s curve: its shipped alert threshold first, its review
    threshold, and the hospital's own when it was set for ``version``."""
    marks = [Mark("shipped alert", version.alert_threshold, "shipped")]
    review = registry.review_threshold(version)
    if review is not None:
        marks.append(Mark("review", review, "review"))
    if hospital.alert_threshold is not None and hospital.alert_threshold_version_id == version.id:
        marks.append(Mark(hospital.name, hospital.alert_threshold, "hospital"))
    return marks


@bp.route("/hospitals/<int:hospital_id>/threshold", methods=["GET", "POST"])
@admin_only
def hospital_threshold(hospital_id: int):
    """The active version's validation curve, and a hospital's alert threshold picked from it."""
    hospital = database.session.get(Hospital, hospital_id) or abort(404)
    active = _active_version()
    form = ThresholdForm()
    if form.validate_on_submit():
        def setting() -> dict:
            return {"alert_threshold": hospital.alert_threshold,
                    "alert_threshold_version_id": hospital.alert_threshold_version_id}

        before = setting()
        accounts.set_alert_threshold(hospital, form.alert_threshold.data, active)
        _record("update", hospital, before=before, after=setting())
        database.session.commit()
        chosen = ("the model's own" if hospital.alert_threshold is None
                  else f"{hospital.alert_threshold:.4f}")
        flash(f"{hospital.name} alerts at {chosen} with {active.version}.", "success")
        return redirect(url_for("admin.hospital_threshold", hospital_id=hospital.id), code=303)
    curve = registry.operating_curve(active)
    points, marks = curve.get("points"), _marks(hospital, active)
    review = registry.review_threshold(active)
    in_force = alert_threshold(hospital, active)
    title = (f"Expected melanoma sensitivity and share of images alerted by alert threshold, "
             f"{active.version}, {curve.get('data', 'validation images')}")
    return render_template(
        "admin/threshold.html", hospital=hospital, active=active, form=form, curve=curve,
        in_force=in_force, review=review, expected=read_off(points, in_force) if points else None,
        chart=curve_svg(points, marks, title) if points else None,
        rows=choices(points, marks) if points else []), 400 if form.errors else 200


@bp.route("/hospitals/<int:hospital_id>", methods=["POST"])
@admin_only
def hospital_settings(hospital_id: int):
    hospital = database.session.get(Hospital, hospital_id) or abort(404)
    form = HospitalSettingsForm(prefix=f"h{hospital.id}")
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(f"{hospital.name}: {error}", "error")
        return redirect(url_for("admin.hospitals"), code=303)
    def settings() -> dict:
        return {"alert_threshold": hospital.alert_threshold, "webhook_url": hospital.webhook_url,
                "alert_threshold_version_id": hospital.alert_threshold_version_id}

    before = settings()
    accounts.set_alert_threshold(hospital, form.alert_threshold.data, _active_version())
    hospital.webhook_url = form.webhook_url.data or None
    _record("update", hospital, before=before, after=settings())
    database.session.commit()
    flash(f"Settings of {hospital.name} saved.", "success")
    return redirect(url_for("admin.hospitals"), code=303)


@bp.route("/users", methods=["GET", "POST"])
@admin_only
def users():
    form = UserForm()
    form.hospital_id.choices = _hospital_choices(empty="(none: admins only)")
    status = 200
    if form.validate_on_submit():
        hospital = database.session.get(Hospital, int(form.hospital_id.data)) if form.hospital_id.data else None
        try:
            user = accounts.create_user(database.session, form.email.data, form.role.data,
                                        hospital=hospital, password=form.password.data,
                                        name=form.name.data or "")
            _record("create", user, email=user.email, role=user.role.value)
            database.session.commit()
        except ValueError as error:
            database.session.rollback()
            form.hospital_id.errors.append(str(error))
            status = 400
        except IntegrityError:
            database.session.rollback()
            form.email.errors.append("A user with that email exists.")
            status = 400
        else:
            flash(f"User {user.email} created.", "success")
            return redirect(url_for("admin.users"), code=303)
    elif form.errors:
        status = 400
    rows = database.session.execute(
        select(User, Hospital).outerjoin(Hospital, User.hospital_id == Hospital.id).order_by(User.email)
    ).all()
    return render_template("admin/users.html", form=form, users=rows), status


def _tokens_page(form: TokenForm, plaintext: str | None = None, status: int = 200):
    rows = database.session.execute(
        select(ApiToken, Hospital).join(Hospital, ApiToken.hospital_id == Hospital.id)
        .order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc())
    ).all()
    response = make_response(render_template("admin/tokens.html", form=form, tokens=rows,
                                             plaintext=plaintext), status)
    response.headers["Cache-Control"] = "no-store"  # the page may show a token in plaintext
    return response


@bp.route("/tokens", methods=["GET", "POST"])
@admin_only
def tokens():
    form = TokenForm()
    form.hospital_id.choices = _hospital_choices()
    if form.validate_on_submit():
        hospital = database.session.get(Hospital, int(form.hospital_id.data)) or abort(400)
        token, plaintext = accounts.issue_token(database.session, hospital, name=form.name.data.strip())
        _record("issue", token, name=token.name, prefix=token.prefix)
        database.session.commit()
        fresh = TokenForm(formdata=None, hospital_id=form.hospital_id.data)
        fresh.hospital_id.choices = form.hospital_id.choices
        return _tokens_page(fresh, plaintext)
    return _tokens_page(form, status=400 if form.errors else 200)


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@admin_only
def revoke_token(token_id: int):
    token = database.session.get(ApiToken, token_id) or abort(404)
    accounts.revoke_token(database.session, token)
    _record("revoke", token, prefix=token.prefix)
    database.session.commit()
    flash(f"Token {token.prefix}… revoked.", "success")
    return redirect(url_for("admin.tokens"), code=303)


@bp.route("/models", methods=["GET", "POST"])
@admin_only
def models():
    form = ModelForm()
    status = 200
    if form.validate_on_submit():
        try:
            version = registry.register_bundle(database.session, form.path.data.strip())
            _record("register", version, path=version.path)
            database.session.commit()
        except (BundleError, registry.RegistryError, OSError) as error:
            database.session.rollback()
            form.path.errors.append(str(error))
            status = 400
        else:
            flash(f"Model version {version.version} registered.", "success")
            return redirect(url_for("admin.models"), code=303)
    elif form.errors:
        status = 400
    versions = database.session.scalars(
        select(ModelVersion).order_by(ModelVersion.active.desc(), ModelVersion.created_at.desc())).all()
    return render_template("admin/models.html", form=form, versions=versions), status


@bp.route("/models/<int:version_id>/activate", methods=["POST"])
@admin_only
def activate_model(version_id: int):
    try:
        version = registry.activate(database.session, version_id)
    except registry.RegistryError:
        abort(404)
    _record("activate", version, version=version.version)
    database.session.commit()
    flash(f"Model version {version.version} is now active.", "success")
    return redirect(url_for("admin.models"), code=303)
