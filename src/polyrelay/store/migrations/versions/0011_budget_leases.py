"""budget_leases: the money each node may spend on a metered account or key without asking again

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa


revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_leases",
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(32), primary_key=True),
        sa.Column("micros", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_budget_leases_subject", "budget_leases", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_budget_leases_subject", table_name="budget_leases")
    op.drop_table("budget_leases")
