"""hospitals.alert_threshold_version_id: a hospital's threshold holds for one model version

A threshold set before this revision is taken to be meant for the model version active now.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 20:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hospitals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alert_threshold_version_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_hospitals_alert_threshold_version_id_model_versions'),
                                    'model_versions', ['alert_threshold_version_id'], ['id'])
    op.execute("UPDATE hospitals SET alert_threshold_version_id ="
               " (SELECT id FROM model_versions WHERE active)"
               " WHERE alert_threshold IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('hospitals', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_hospitals_alert_threshold_version_id_model_versions'),
                                 type_='foreignkey')
        batch_op.drop_column('alert_threshold_version_id')
