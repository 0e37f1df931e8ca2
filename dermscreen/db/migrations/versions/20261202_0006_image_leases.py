"""images.held_until: the lease of the worker scoring a queued image

A worker that takes a chunk sets ``held_until`` a short lease ahead and renews it while the chunk
runs; the reconciler hands out again the queued images whose lease has passed (their worker died).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 14:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('held_until')
