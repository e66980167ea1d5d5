"""token names unique per user, not across all users

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# 0001 created the constraint unnamed: SQLite keeps it nameless (batch mode needs a naming
# convention to address it), PostgreSQL named it itself (found by inspection).
_SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _swap(old_columns: list[str], old_name: str, new_columns: list[str], new_name: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("tokens", naming_convention=_SQLITE_NAMES) as batch_op:
            batch_op.drop_constraint(old_name, type_="unique")
            batch_op.create_unique_constraint(new_name, new_columns)
        return
    existing = next(c["name"] for c in sa.inspect(bind).get_unique_constraints("tokens")
                    if c["column_names"] == old_columns)
    op.drop_constraint(existing, "tokens", type_="unique")
    op.create_unique_constraint(new_name, "tokens", new_columns)


def upgrade() -> None:
    _swap(["name"], "uq_tokens_name", ["user_id", "name"], "uq_tokens_user_id_name")


def downgrade() -> None:
    _swap(["user_id", "name"], "uq_tokens_user_id_name", ["name"], "uq_tokens_name")
