"""Admin forms (CSRF-protected by Flask-WTF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, FloatField, PasswordField, SelectField, StringField, URLField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from dermscreen.db.tenancy import Role

MIN_PASSWORD = 12
EMAIL = Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Enter an email address.")


class ThresholdForm(FlaskForm):
    """A hospital's alert threshold alone (the validation curve page's buttons submit it)."""

    alert_threshold = FloatField(
        "Alert threshold (melanoma probability; empty: the model's calibrated threshold)",
        validators=[Optional(), NumberRange(0.0, 1.0)])


class HospitalSettingsForm(ThresholdForm):
    webhook_url = URLField("Webhook URL for alerts (optional)",
                           validators=[Optional(), Length(max=500)])


class HospitalForm(HospitalSettingsForm):
    name = StringField("Hospital name", validators=[DataRequired(), Length(max=200)])


class UserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), EMAIL, Length(max=254)])
    name = StringField("Name", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices=[(role.value, role.value) for role in Role])
    hospital_id = SelectField("Hospital (none for admins)", choices=[], validate_choice=False)
    password = PasswordField(f"Password (at least {MIN_PASSWORD} characters)",
                             validators=[DataRequired(), Length(min=MIN_PASSWORD, max=1024)])


class TokenForm(FlaskForm):
    hospital_id = SelectField("Hospital", choices=[], validators=[DataRequired()])
    name = StringField("Token name (what it is for)", validators=[DataRequired(), Length(max=200)])


class ModelForm(FlaskForm):
    path = StringField("Model bundle folder on the server", validators=[DataRequired(), Length(max=500)])
