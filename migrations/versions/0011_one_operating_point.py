"""site_calibrations: at most one in force per model version

Revision ID: 0011_one_operating_point
Revises: 0010_prediction_images
Create Date: 2026-12-04 23:00:00

Two adoptions at the same moment could both go in force (each saw none, or the same one, to withdraw);
the later one was applied, and withdrawing it silently brought back the earlier. A partial unique
index now refuses the second. Rows left in force by that race are withdrawn first, keeping the one the
app applied (the latest), by the admin who adopted it, at that moment.
"""
import sqlalchemy as sa
from alembic import op


revision = "0011_one_operating_point"
down_revision = "0010_prediction_images"
branch_labels = None
depends_on = None

IN_FORCE = sa.text("withdrawn_at IS NULL")


def upgrade():
    op.execute(
        """
        UPDATE site_calibrations
        SET withdrawn_at = (
                SELECT later.created_at FROM site_calibrations later
                WHERE later.model_version = site_calibrations.model_version
                  AND later.withdrawn_at IS NULL AND later.id > site_calibrations.id
                ORDER BY later.id DESC LIMIT 1
            ),
            withdrawn_by_id = (
                SELECT later.adopted_by_id FROM site_calibrations later
                WHERE later.model_version = site_calibrations.model_version
                  AND later.withdrawn_at IS NULL AND later.id > site_calibrations.id
                ORDER BY later.id DESC LIMIT 1
            )
        WHERE withdrawn_at IS NULL AND EXISTS (
            SELECT 1 FROM site_calibrations later
            WHERE later.model_version = site_calibrations.model_version
              AND later.withdrawn_at IS NULL AND later.id > site_calibrations.id
        )
        """
    )
    op.create_index(
        "uq_site_calibrations_in_force",
        "site_calibrations",
        ["model_version"],
        unique=True,
        sqlite_where=IN_FORCE,
        postgresql_where=IN_FORCE,
    )


def downgrade():
    op.drop_index("uq_site_calibrations_in_force", table_name="site_calibrations")
