"""audit trail and API tokens: named, expiring, revocable tokens; who and from where in the audit trail

Revision ID: 0003_audit
Revises: 0006_caution
Create Date: 2026-12-02 04:55:00

Audit events become append-only in the database itself: a trigger refuses every UPDATE of
audit_events on SQLite and PostgreSQL. DELETE stays possible for `flask audit prune` (retention).
Tokens issued before this migration get the default 90-day life from now.
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0003_audit"
down_revision = "0006_caution"
branch_labels = None
depends_on = None

NO_UPDATE_MESSAGE = "audit_events is append-only"


def upgrade():
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    tokens = sa.table("api_tokens", sa.column("expires_at", sa.DateTime(timezone=True)))
    op.execute(tokens.update().values(expires_at=datetime.now(UTC) + timedelta(days=90)))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.alter_column("name", existing_type=sa.String(length=64), server_default=None)

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ip", sa.String(length=64), nullable=False, server_default=""))
        batch_op.create_foreign_key("fk_audit_events_user_id_users", "users", ["user_id"], ["id"])
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_actor"), ["actor"], unique=False)
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("ip", existing_type=sa.String(length=64), server_default=None)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION audit_events_no_update() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION '{NO_UPDATE_MESSAGE}'; END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_events_no_update()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, '{NO_UPDATE_MESSAGE}'); END"
        )


def downgrade():
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_update" + (
        " ON audit_events" if op.get_bind().dialect.name == "postgresql" else ""
    ))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_events_no_update()")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_actor"))
        batch_op.drop_index(batch_op.f("ix_audit_events_action"))
        batch_op.drop_constraint("fk_audit_events_user_id_users", type_="foreignkey")
        batch_op.drop_column("ip")
        batch_op.drop_column("user_id")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("name")
