"""accounts: users, groups, ledger, sessions, redemption codes; tokens belong to users

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("group", sa.String(length=64), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("unlimited", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "groups",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ratio_ppm", sa.BigInteger(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "kind", name="uq_ledger_request_kind"),
    )
    op.create_index("ix_ledger_user_id_id", "ledger", ["user_id", "id"], unique=False)
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"], unique=False)
    op.create_table(
        "redemption_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("code_hint", sa.String(length=32), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_by", sa.Integer(), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("allowed_ips", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("rpm_limit", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tpm_limit", sa.Integer(), nullable=True))
        batch_op.create_index("ix_tokens_user_id", ["user_id"], unique=False)
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("test_latency_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("test_result", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("balance_micros", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_usage_logs_user_id_created_at", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_logs_user_id_created_at")
        batch_op.drop_column("user_id")
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.drop_column("balance_micros")
        batch_op.drop_column("test_result")
        batch_op.drop_column("test_latency_ms")
        batch_op.drop_column("tested_at")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_tokens_user_id")
        batch_op.drop_column("tpm_limit")
        batch_op.drop_column("rpm_limit")
        batch_op.drop_column("allowed_ips")
        batch_op.drop_column("user_id")
    op.drop_table("redemption_codes")
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("ix_ledger_user_id_id", table_name="ledger")
    op.drop_table("ledger")
    op.drop_table("groups")
    op.drop_table("users")
