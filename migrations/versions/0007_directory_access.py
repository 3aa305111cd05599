"""users.directory_access: whether the directory gave a directory account a role at its last check

Revision ID: 0007_directory_access
Revises: 0003_audit (the head: the files were numbered before they were ordered)
Create Date: 2026-12-03 16:30:00

The periodic directory re-check ends a leaver's sessions and tokens once; this flag says it has.
"""
from alembic import op
import sqlalchemy as sa


revision = "0007_directory_access"
down_revision = "0003_audit"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("directory_access", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("directory_access")
