"""api_tokens: the admin page form's one-time value, one token per sent form

Revision ID: 0012_token_form_once
Revises: 0011_one_operating_point
Create Date: 2026-12-05 01:30:00

The Users page's "Issue API token" form carries a one-time value so that the form sent again issues
no second token. It was remembered in the session cookie, so a double-click's two POSTs, carrying the
same cookie, both found it unused: two live tokens, one whose secret nobody saw. The value is now kept
with the token it issued, unique per user, so the database refuses the second. Tokens issued before
have none (NULLs never collide).
"""
import sqlalchemy as sa
from alembic import op


revision = "0012_token_form_once"
down_revision = "0011_one_operating_point"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("api_tokens", sa.Column("form_once", sa.String(length=64), nullable=True))
    op.create_index("uq_api_tokens_form_once", "api_tokens", ["user_id", "form_once"], unique=True)


def downgrade():
    op.drop_index("uq_api_tokens_form_once", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("form_once")
