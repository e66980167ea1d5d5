"""channel_events: the audit trail of every channel disable, enable, cooldown and probe result

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa


revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
    )
    op.create_index("ix_channel_events_channel_id_created_at", "channel_events", ["channel_id", "created_at"])
    op.create_index("ix_channel_events_created_at", "channel_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_channel_events_created_at", table_name="channel_events")
    op.drop_index("ix_channel_events_channel_id_created_at", table_name="channel_events")
    op.drop_table("channel_events")
