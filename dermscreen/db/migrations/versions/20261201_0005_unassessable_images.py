"""images.status 'unassessable' and batches.unassessable_images: images the gate stops

The status column is a string with a CHECK constraint (``str_enum``), on PostgreSQL as on SQLite,
so the constraint is replaced to admit the new value. A downgrade turns unassessable images into
failed ones (their reason stays in ``error``) and counts them as failed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 14:41:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

STATUSES = ('received', 'queued', 'done', 'failed')


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{status}'" for status in statuses))


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unassessable_images', sa.Integer(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.alter_column('unassessable_images', existing_type=sa.Integer(),
                              server_default=None)
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_images_imagestatus'), type_='check')
        batch_op.create_check_constraint(op.f('ck_images_imagestatus'),
                                         _status_check(STATUSES + ('unassessable',)))


def downgrade() -> None:
    op.execute("UPDATE images SET status = 'failed' WHERE status = 'unassessable'")
    op.execute("UPDATE batches SET failed_images = failed_images + unassessable_images")
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_images_imagestatus'), type_='check')
        batch_op.create_check_constraint(op.f('ck_images_imagestatus'), _status_check(STATUSES))
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('unassessable_images')
