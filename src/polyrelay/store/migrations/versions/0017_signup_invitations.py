"""Sign-up, e-mail verification, password reset and invitations: account_tokens, affiliate_entries and
the users' sign-up and invitation columns

Revision ID: 0017
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa


revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("signed_up_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("invite_code", sa.String(32), nullable=True))
        batch.add_column(sa.Column("invited_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("affiliate_micros", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("rewarded_invites", sa.Integer(), nullable=False, server_default="0"))
        batch.create_unique_constraint("uq_users_invite_code", ["invite_code"])
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), nullable=False, index=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "affiliate_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ref", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("invitee_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_affiliate_entries_user_id_id", "affiliate_entries", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_affiliate_entries_user_id_id", table_name="affiliate_entries")
    op.drop_table("affiliate_entries")
    op.drop_table("account_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_invite_code", type_="unique")
        for column in ("rewarded_invites", "affiliate_micros", "invited_by", "invite_code", "signed_up_at"):
            batch.drop_column(column)
