"""cache writes billed at their own price: prices.cache_write_per_mtok, usage_logs.cache_write_tokens

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cache_write_per_mtok", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_column("cache_write_tokens")
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.drop_column("cache_write_per_mtok")
