"""deactivate a directory account named pacs, created before directory sign-in refused that name

Revision ID: 0008_reserved_name
Revises: 0007_directory_access
Create Date: 2026-12-04 22:30:00

PACS is the user every film from the PACS shows (those films have no account) and what the
history's user filter finds them by. Directory sign-in now refuses an entry of that name, but a row
it created earlier stayed, with its sessions and API tokens: its uploads and audit lines passed for
the PACS's. Such a row (source = directory; the name compared as the app compares names, NFKC and
case folded) is deactivated, marked without directory access, its sessions ended and its tokens
revoked, each step in the audit trail; its history stays. A local account is never touched: local
names were refused first, and whatever a site created under that name by hand is its own decision.
The downgrade leaves the account deactivated: turning it back on is what this revision prevents.
"""

import unicodedata
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008_reserved_name"
down_revision = "0007_directory_access"
branch_labels = None
depends_on = None

# The names as they were at this revision (webapp.models.PACS_SUBMITTER, folded_username), copied:
# a migration must not change when the app's code does.
RESERVED = "pacs"
ACTOR = "migration"

users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("source", sa.String),
    sa.column("active", sa.Boolean),
    sa.column("directory_access", sa.Boolean),
    sa.column("session_version", sa.Integer),
)
tokens = sa.table(
    "api_tokens",
    sa.column("id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("revoked_at", sa.DateTime(timezone=True)),
)
audit = sa.table(
    "audit_events",
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("target", sa.String),
    sa.column("details", sa.Text),
    sa.column("ip", sa.String),
)


def upgrade():
    conn = op.get_bind()
    now = datetime.now(UTC)
    accounts = conn.execute(sa.select(users.c.id, users.c.username).where(users.c.source == "directory")).all()
    for user_id, username in accounts:
        if unicodedata.normalize("NFKC", username).strip().lower() != RESERVED:
            continue
        revoked = conn.execute(
            sa.select(tokens.c.id).where(tokens.c.user_id == user_id, tokens.c.revoked_at.is_(None))
        ).scalars().all()
        conn.execute(
            sa.update(users)
            .where(users.c.id == user_id)
            .values(active=False, directory_access=False, session_version=users.c.session_version + 1)
        )
        conn.execute(sa.update(tokens).where(tokens.c.id.in_(revoked)).values(revoked_at=now))
        why = "its name is reserved for films from the PACS"
        events = [
            {"action": "token_revoked", "target": username, "details": f"token {token_id}; {why}"}
            for token_id in revoked
        ]
        events.append({"action": "user_deactivated", "target": username, "details": f"directory account: {why}"})
        conn.execute(sa.insert(audit), [{"created_at": now, "actor": ACTOR, "ip": "", **event} for event in events])


def downgrade():
    pass
