"""the DICOM node: received films (keyed hashes only), the results outbox, worklist reads; predictions gain
a source and may have no user (films from the PACS)

Revision ID: 0006_dicom
Revises: 0004_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_dicom"
down_revision = "0004_jobs"
branch_labels = None
depends_on = None


def upgrade():
    # batch mode: SQLite can only change a column's nullability by rebuilding the table.
    with op.batch_alter_table("predictions") as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="upload"))
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_index("ix_predictions_source", ["source"])
    op.create_table(
        "dicom_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sop_key", sa.String(length=64), nullable=False),
        sa.Column("study_key", sa.String(length=64), nullable=False),
        sa.Column("calling_aet", sa.String(length=16), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("copies", sa.Integer(), nullable=False),
        sa.Column("spool_name", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prediction_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_key", name="uq_dicom_receipts_sop_key"),
        sa.UniqueConstraint("prediction_id", name="uq_dicom_receipts_prediction_id"),
    )
    op.create_index("ix_dicom_receipts_received_at", "dicom_receipts", ["received_at"])
    op.create_index("ix_dicom_receipts_study_key", "dicom_receipts", ["study_key"])
    op.create_index("ix_dicom_receipts_state", "dicom_receipts", ["state"])
    op.create_table(
        "dicom_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("receipt_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_name", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["receipt_id"], ["dicom_receipts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dicom_results_receipt_id", "dicom_results", ["receipt_id"])
    op.create_index("ix_dicom_results_state", "dicom_results", ["state"])
    op.create_table(
        "worklist_reads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "prediction_id", name="uq_worklist_reads_user_prediction"),
    )
    op.create_index("ix_worklist_reads_prediction_id", "worklist_reads", ["prediction_id"])


def downgrade():
    op.drop_index("ix_worklist_reads_prediction_id", table_name="worklist_reads")
    op.drop_table("worklist_reads")
    op.drop_index("ix_dicom_results_state", table_name="dicom_results")
    op.drop_index("ix_dicom_results_receipt_id", table_name="dicom_results")
    op.drop_table("dicom_results")
    op.drop_index("ix_dicom_receipts_state", table_name="dicom_receipts")
    op.drop_index("ix_dicom_receipts_study_key", table_name="dicom_receipts")
    op.drop_index("ix_dicom_receipts_received_at", table_name="dicom_receipts")
    op.drop_table("dicom_receipts")
    # Films from the PACS have no user: they cannot outlive the column becoming required again.
    op.execute("DELETE FROM feedback WHERE prediction_id IN (SELECT id FROM predictions WHERE user_id IS NULL)")
    op.execute("DELETE FROM predictions WHERE user_id IS NULL")
    with op.batch_alter_table("predictions") as batch_op:
        batch_op.drop_index("ix_predictions_source")
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("source")
