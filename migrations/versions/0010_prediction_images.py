"""prediction_images: a prediction's review copy and heat map in a table of their own

Revision ID: 0010_prediction_images
Revises: 0009_sign_in_counter_names
Create Date: 2026-12-04 22:30:00

SQLite stores a row's columns in order, and the columns later migrations added to predictions
(source, caution, chest_probability, feature_distance, site_calibration_id) sat behind each row's
images: every query reading one of them (the monitoring page, the lists) walked each row's image
overflow pages. The images are copied here, then dropped from predictions (on SQLite the batch
rebuilds the table; the database file keeps the freed pages until VACUUM).
"""
from alembic import op
import sqlalchemy as sa


revision = "0010_prediction_images"
down_revision = "0009_sign_in_counter_names"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "prediction_images",
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("review_png", sa.LargeBinary(), nullable=False),
        sa.Column("heatmap_png", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("prediction_id"),
    )
    op.execute(
        "INSERT INTO prediction_images (prediction_id, review_png, heatmap_png) "
        "SELECT id, review_png, heatmap_png FROM predictions"
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("heatmap_png")
        batch_op.drop_column("review_png")


def downgrade():
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_png", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("heatmap_png", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE predictions SET "
        "review_png = (SELECT review_png FROM prediction_images WHERE prediction_id = predictions.id), "
        "heatmap_png = (SELECT heatmap_png FROM prediction_images WHERE prediction_id = predictions.id)"
    )
    # NOT NULL as before: a prediction without images (none should exist) stops the downgrade here.
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.alter_column("review_png", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.alter_column("heatmap_png", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table("prediction_images")
