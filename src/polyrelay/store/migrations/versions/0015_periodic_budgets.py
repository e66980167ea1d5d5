"""Periodic budgets: a key's or a user's limit that resets daily, weekly or monthly (UTC)

tokens.budget_period / admin_budget_period: the period of the owner's and the administrator's
limit (null: the limit never resets). users.budget_micros / budget_period: a cap on a user's spend
per period, on top of the prepaid balance. budget_periods: what was charged under each period.

Revision ID: 0015
Revises: 0014
"""

from alembic import op
import sqlalchemy as sa


revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("budget_period", sa.String(8), nullable=True))
        batch.add_column(sa.Column("admin_budget_period", sa.String(8), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("budget_micros", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(8), nullable=True))
    op.create_table(
        "budget_periods",
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("starts_at", sa.BigInteger(), nullable=False),
        sa.Column("used_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "period", "starts_at"),
    )


def downgrade() -> None:
    op.drop_table("budget_periods")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("budget_micros")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("admin_budget_period")
        batch.drop_column("budget_period")
