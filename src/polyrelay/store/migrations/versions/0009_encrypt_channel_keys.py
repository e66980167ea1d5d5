"""upstream keys encrypted at rest: channels.keys holds a Fernet token instead of the JSON list

Revision ID: 0009
Revises: 0008

The column keeps its JSON type (the token is a JSON string), so only data changes. The
secret key is the one the process loaded at start (``polyrelay.store.crypto.install``);
a database without channels needs none.
"""

from collections.abc import Callable
from typing import Any

from alembic import op
import sqlalchemy as sa
from cryptography.fernet import Fernet

from polyrelay.store import crypto

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_channels = sa.table("channels", sa.column("id", sa.Integer), sa.column("keys", sa.JSON))


def _rewrite(still_to_do: type, convert: Callable[[Fernet, Any], Any]) -> None:
    """Convert the rows whose stored keys are still of type ``still_to_do``, so a rerun skips done rows."""
    bind = op.get_bind()
    rows = [row for row in bind.execute(sa.select(_channels)).all() if isinstance(row.keys, still_to_do)]
    if not rows:
        return
    cipher = crypto.active().cipher
    for row in rows:
        bind.execute(sa.update(_channels).where(_channels.c.id == row.id).values(keys=convert(cipher, row.keys)))


def upgrade() -> None:
    _rewrite(list, crypto.encrypt_keys)


def downgrade() -> None:
    _rewrite(str, crypto.decrypt_keys)
