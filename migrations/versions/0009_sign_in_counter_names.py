"""sign_in_counters: drop the counters keyed on the name as typed

Revision ID: 0009_sign_in_counter_names
Revises: 0008_reserved_name
Create Date: 2026-12-04 22:00:00

The per-account counters were keyed on the typed name in clear, which may be a password typed into the
username field; they are now keyed on its keyed hash (webapp/auth/throttle.py). The old rows would
stay in clear for ever (a row goes only when the same name signs in from the same address), so they
are deleted: each such name and address gets its free attempts once more. Nothing to restore on the
way down.
"""
from alembic import op


revision = "0009_sign_in_counter_names"
down_revision = "0008_reserved_name"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("DELETE FROM sign_in_counters WHERE key LIKE 'pair:%'")


def downgrade():
    pass
