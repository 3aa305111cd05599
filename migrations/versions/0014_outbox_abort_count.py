"""dicom_results: the PACS's aborts in a row, counted in a column of their own

Revision ID: 0014_outbox_abort_count
Revises: 0013_username_case
Create Date: 2026-12-05 05:00:00

A PACS that accepts the association and aborts the C-STORE 3 tries in a row refuses the result
(pacs/tasks.py). The count was read back out of the last error's text, which is cut to 500
characters: with a long enough PACS address the cut fell on the count, the first abort read as the
second, and a result was refused after 2 tries. It is now a column. A result waiting to be tried
again after such aborts gets the count its last error states, so the row goes on where it was.
"""
import re

import sqlalchemy as sa
from alembic import op


revision = "0014_outbox_abort_count"
down_revision = "0013_username_case"
branch_labels = None
depends_on = None

# The note pacs/tasks.py (aborted_note) wrote at the end of the last error, up to 0013.
NOTE = re.compile(r"\(aborted (\d+) of \d+ tries in a row before it is taken as a refusal\)$")


def upgrade():
    op.add_column("dicom_results", sa.Column("aborts_in_a_row", sa.Integer(), nullable=False, server_default="0"))
    bind = op.get_bind()
    waiting = bind.execute(
        sa.text("SELECT id, last_error FROM dicom_results WHERE state = 'pending' AND last_error LIKE '%(aborted %'")
    ).all()
    for row in waiting:
        note = NOTE.search(row.last_error)
        if note:
            bind.execute(
                sa.text("UPDATE dicom_results SET aborts_in_a_row = :aborts WHERE id = :id"),
                {"aborts": int(note.group(1)), "id": row.id},
            )


def downgrade():
    with op.batch_alter_table("dicom_results") as batch:
        batch.drop_column("aborts_in_a_row")
