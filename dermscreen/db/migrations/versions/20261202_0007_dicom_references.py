"""images.dicom_*_uid: the study, series, SOP instance and SOP class UIDs of a DICOM upload

They let results (FHIR, DICOM SR) be filed back against the source instance. No other DICOM
attribute, and no patient identifier, is stored. Null for every other image.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COLUMNS = ('dicom_study_uid', 'dicom_series_uid', 'dicom_sop_instance_uid',
           'dicom_sop_class_uid')


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.add_column(sa.Column(column, sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
