"""users.theme: the reading-room theme each user chose (system, light or dark)

Revision ID: 0005_reading
Revises: 0002_identity
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_reading"
down_revision = "0002_identity"
branch_labels = None
depends_on = None


def upgrade():
    # batch mode: SQLite rebuilds the table, PostgreSQL alters it in place.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("theme", sa.String(length=8), server_default="system", nullable=False))


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("theme")
