"""batches.ingested_entries, ingested_at, held_until: ingest commits a chunk at a time

Ingest commits the entries of a batch's uploads a chunk at a time (so scoring starts while the
rest is unpacked) under a lease that the reconciler watches; ``ingested_at`` says it finished, and
a batch closes only after it. Batches ingested before this revision were ingested whole.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ingested_entries', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('held_until', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE batches SET ingested_at = created_at WHERE status != 'received'")


def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('held_until')
        batch_op.drop_column('ingested_at')
        batch_op.drop_column('ingested_entries')
