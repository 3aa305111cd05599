"""users: one account per name whatever its case, refused by the database

Revision ID: 0013_username_case
Revises: 0012_token_form_once
Create Date: 2026-12-05 02:00:00

"Alice" and "alice" created at the same moment (two administrators, the Users page and the shell, a
directory first sign-in beside either) both passed the app's case-insensitive "name taken" check
before either was saved, and the unique name, case-sensitive, let both in. A unique index on
lower(username) now refuses the second.

A database may already hold such names: the Users page made "Clin" beside "clin" until that check
came, and directory sign-in made "alice" beside a local "Alice" until 4 December. Merging or renaming
accounts is not a migration's to decide (each has its own history and audit trail), and refusing to
upgrade would stop screening, so those accounts are kept as they are and named in a warning: the index
leaves out every one but the oldest of each such group, which still stands for the name, so no new
account can take it in any case. docs/sign-in.md says how to retire the spare one (deactivate it).
"""
import logging

import sqlalchemy as sa
from alembic import op


revision = "0013_username_case"
down_revision = "0012_token_form_once"
branch_labels = None
depends_on = None

INDEX = "uq_users_username_folded"
log = logging.getLogger("alembic.runtime.migration")


def upgrade():
    # Grouped by the database's own lower(), the function the index compares with.
    variants = op.get_bind().execute(
        sa.text(
            "SELECT id, username, lower(username) AS folded FROM users WHERE lower(username) IN "
            "(SELECT lower(username) FROM users GROUP BY lower(username) HAVING count(*) > 1) ORDER BY id"
        )
    ).all()
    oldest, spares = {}, []
    for row in variants:
        if row.folded in oldest:
            spares.append(row.id)
            log.warning(
                "account %r (id %d) differs only in case from the older %r (id %d): both are kept, and no new "
                "account can take that name; if one is not in use, deactivate it (docs/sign-in.md)",
                row.username, row.id, oldest[row.folded].username, oldest[row.folded].id,
            )
        else:
            oldest[row.folded] = row
    # Literal ids (integers read above): a partial index's condition takes no bound parameters.
    kept_out = sa.text(f"id NOT IN ({', '.join(str(int(i)) for i in spares)})") if spares else None
    op.create_index(
        INDEX, "users", [sa.text("lower(username)")], unique=True, sqlite_where=kept_out, postgresql_where=kept_out
    )


def downgrade():
    op.drop_index(INDEX, table_name="users")
