"""users: the directory entry's stable identity (objectGUID / entryUUID) beside its name

Revision ID: 0015_directory_entry_id
Revises: 0014_outbox_abort_count
Create Date: 2026-12-05 06:00:00

A directory account was identified by its name alone, so whoever held that name in the directory
signed in to the account: after LDAP_URL was pointed at another directory (a merger, a test directory
by mistake) or Active Directory gave a leaver's sAMAccountName to someone new, that person had the
earlier one's history, role and live API tokens. The column keeps the entry's identity. Existing
accounts start without one: the directory is asked at their next sign-in or re-check, which records
it (audited); a migration cannot ask the directory.
"""

import sqlalchemy as sa
from alembic import op


revision = "0015_directory_entry_id"
down_revision = "0014_outbox_abort_count"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("directory_entry_id", sa.String(length=64), nullable=True))


def downgrade():
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), not a batch: SQLite's batch copies the
    # table and would drop 0013's index on lower(username) with it.
    op.drop_column("users", "directory_entry_id")
