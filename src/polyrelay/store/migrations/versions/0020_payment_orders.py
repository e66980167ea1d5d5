"""payment_orders: top-ups paid through Stripe Checkout or Epay, credited once each

Revision ID: 0020
Revises: 0019
"""

from alembic import op
import sqlalchemy as sa


revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("credit_micros", sa.BigInteger(), nullable=False),
        sa.Column("bonus_micros", sa.BigInteger(), nullable=False),
        sa.Column("provider_ref", sa.String(255), nullable=True),
        sa.Column("note", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("order_no", name="uq_payment_orders_order_no"),
    )
    op.create_index("ix_payment_orders_user_id_id", "payment_orders", ["user_id", "id"])
    op.create_index("ix_payment_orders_status_id", "payment_orders", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_payment_orders_status_id", table_name="payment_orders")
    op.drop_index("ix_payment_orders_user_id_id", table_name="payment_orders")
    op.drop_table("payment_orders")
