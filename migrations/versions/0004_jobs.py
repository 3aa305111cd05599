"""validation runs on the job queue, site operating points, drift scores on predictions

Revision ID: 0004_jobs
Revises: 0005_reading
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_jobs"
down_revision = "0005_reading"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "validation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        sa.Column("archive_name", sa.String(length=255), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validation_runs_status", "validation_runs", ["status"])
    op.create_table(
        "validation_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("truth", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("image_format", sa.String(length=16), nullable=True),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column("p_pneumonia", sa.Float(), nullable=True),
        sa.Column("chest_probability", sa.Float(), nullable=True),
        sa.Column("feature_distance", sa.Float(), nullable=True),
        sa.Column("unknown_reason", sa.Text(), nullable=True),
        sa.Column("refusal", sa.Text(), nullable=True),
        sa.Column("review_png", sa.LargeBinary(), nullable=True),
        sa.Column("heatmap_png", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["validation_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validation_items_run_state", "validation_items", ["run_id", "state"])
    op.create_table(
        "site_calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("validation_run_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("adopted_by_id", sa.Integer(), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["adopted_by_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["validation_run_id"], ["validation_runs.id"]),
        sa.ForeignKeyConstraint(["withdrawn_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_site_calibrations_model_version", "site_calibrations", ["model_version"])
    # batch mode: SQLite can only add a foreign key by rebuilding the table.
    with op.batch_alter_table("predictions") as batch_op:
        batch_op.add_column(sa.Column("chest_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("feature_distance", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("site_calibration_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_predictions_site_calibration_id", "site_calibrations", ["site_calibration_id"], ["id"]
        )


def downgrade():
    with op.batch_alter_table("predictions") as batch_op:
        batch_op.drop_constraint("fk_predictions_site_calibration_id", type_="foreignkey")
        batch_op.drop_column("site_calibration_id")
        batch_op.drop_column("feature_distance")
        batch_op.drop_column("chest_probability")
    op.drop_index("ix_site_calibrations_model_version", table_name="site_calibrations")
    op.drop_table("site_calibrations")
    op.drop_index("ix_validation_items_run_state", table_name="validation_items")
    op.drop_table("validation_items")
    op.drop_index("ix_validation_runs_status", table_name="validation_runs")
    op.drop_table("validation_runs")
