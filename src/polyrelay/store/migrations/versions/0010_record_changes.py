"""record_changes: the change log that lets every process reload only the records an admin write changed

Revision ID: 0010
Revises: 0009

Also makes sure ``meta.records_version`` exists, so the first writers of a fresh database lock
an existing row instead of racing to insert it.
"""

from alembic import op
import sqlalchemy as sa


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_record_changes_version", "record_changes", ["version"])
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    bind = op.get_bind()
    if bind.execute(sa.select(meta.c.key).where(meta.c.key == "records_version")).first() is None:
        bind.execute(sa.insert(meta).values(key="records_version", value="0"))


def downgrade() -> None:
    op.drop_index("ix_record_changes_version", table_name="record_changes")
    op.drop_table("record_changes")
