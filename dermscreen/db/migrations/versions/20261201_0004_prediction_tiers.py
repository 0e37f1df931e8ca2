"""predictions.tier and predictions.review_threshold: the alert, review and none tiers

A prediction written before this revision had no review tier: its tier is ``alert`` when it was
flagged, else ``none``, and its review threshold is its alert threshold.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_threshold', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('tier', sa.String(length=16), nullable=True))
    op.execute("UPDATE predictions SET tier = CASE WHEN flagged THEN 'alert' ELSE 'none' END,"
               " review_threshold = threshold")
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.alter_column('review_threshold', existing_type=sa.Double(), nullable=False)
        batch_op.alter_column('tier', existing_type=sa.String(length=16), nullable=False)
        batch_op.create_check_constraint(op.f('ck_predictions_tier'),
                                         "tier IN ('alert', 'review', 'none')")


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_predictions_tier'), type_='check')
        batch_op.drop_column('tier')
        batch_op.drop_column('review_threshold')
