"""admin-imposed token limits: tokens.admin_* beside the owner's own settings

Revision ID: 0008
Revises: 0007

What an administrator sets on a token (``PATCH /api/tokens/{id}``) lives in its own
columns, so the owner's ``PATCH /api/me/tokens/{id}`` cannot undo it; the snapshot
applies the stricter of each pair. Existing tokens start with no admin limits.
"""

from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin_enabled", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("admin_quota_micros", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("admin_models", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("admin_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("admin_allowed_ips", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("admin_rpm_limit", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("admin_tpm_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        for column in ("admin_tpm_limit", "admin_rpm_limit", "admin_allowed_ips", "admin_expires_at", "admin_models",
                       "admin_quota_micros", "admin_enabled"):
            batch_op.drop_column(column)
