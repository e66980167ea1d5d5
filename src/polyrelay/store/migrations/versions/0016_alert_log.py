"""alert_log, job_leases, channels.balance_updated_at: the alerts told (console Health page,
GET /api/alerts); which node works a cluster-wide job (the alert checks), so each alert is told once,
not once per node; when a channel's balance was last fetched from its upstream

Revision ID: 0016
Revises: 0015
"""

from alembic import op
import sqlalchemy as sa


revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("user_emailed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_alert_log_created_at", "alert_log", ["created_at"])
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("balance_updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("balance_updated_at")
    op.drop_table("job_leases")
    op.drop_index("ix_alert_log_created_at", table_name="alert_log")
    op.drop_table("alert_log")
