"""mj_callbacks: tasks.notify_due_at, so undelivered notifyHook callbacks survive a restart

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify_due_at", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_tasks_notify_due_at", ["notify_due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_notify_due_at")
        batch_op.drop_column("notify_due_at")
