"""prediction caution: a short warning shown with an answered verdict

Revision ID: 0006_caution
Revises: 0004_jobs
Create Date: 2026-12-02 04:40:00

The caution is a fixed sentence (e.g. "outside the validated age range"); the age it is
derived from is never stored.
"""
from alembic import op
import sqlalchemy as sa


revision = "0006_caution"
down_revision = "0006_dicom"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caution", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("caution")
