"""The pages' forms. Flask-WTF adds and checks a CSRF token on every one."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, MultipleFileField
from wtforms import RadioField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from dermscreen.db.review import Decision

DECISIONS = [
    (Decision.MELANOMA.value, "Melanoma"),
    (Decision.NOT_MELANOMA.value, "Not melanoma"),
    (Decision.NEEDS_BIOPSY.value, "Needs biopsy"),
    (Decision.OTHER.value, "Other diagnosis (choose below)"),
]


class UploadForm(FlaskForm):
    files = MultipleFileField("Images or archives (.jpg, .png, .zip, .tar.gz)",
                              validators=[DataRequired("Choose at least one file.")])
    metadata = FileField("Per-image metadata CSV (optional; an 'image' or 'filename' column)")


class ReviewForm(FlaskForm):
    decision = RadioField("Decision", choices=DECISIONS, validators=[DataRequired("Choose a decision.")])
    diagnosis = SelectField("Other diagnosis", choices=[], validate_choice=False)
    notes = TextAreaField("Notes", validators=[Length(max=5000)])

    def __init__(self, classes: list[str], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.diagnosis.choices = [("", "(none)")] + [(name, name) for name in classes if name != "melanoma"]

    def validate_diagnosis(self, field):
        if self.decision.data == Decision.OTHER.value and not field.data:
            raise ValidationError("Name the diagnosis for 'Other diagnosis'.")
        if field.data and field.data not in dict(self.diagnosis.choices):
            raise ValidationError("Choose one of the listed diagnoses.")
