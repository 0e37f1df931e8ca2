"""Sign in and sign out."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from dermscreen.accounts import verify_password
from dermscreen.db import audit
from dermscreen.db.tenancy import User
from dermscreen.web.auth import bp
from dermscreen.web.auth.access import Account, local_path
from dermscreen.web.auth.forms import SignInForm
from dermscreen.web.extensions import database


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("pages.home"))
    form = SignInForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        user = database.session.scalar(select(User).where(User.email == email))
        if user is not None and user.active and verify_password(user.password_hash, form.password.data):
            session.clear()  # no session fixation: a fresh session for the signed-in user
            login_user(Account.of(user))
            audit.record(database.session, "sign_in", user, user_id=user.id)
            database.session.commit()
            return redirect(local_path(request.args.get("next"), url_for("pages.home")))
        flash("Wrong email or password.", "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
