"""Job leases: one node at a time works a cluster-wide job (the alert checks), the others stand by.

A node claims or renews a job in one upsert that only takes the row when it is its own or expired
(``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE node = me OR expires_at < now``), then reads
who holds it: two nodes claiming at once both see the same single winner. A holder that stops
renewing (killed, cut off) loses the job ``ttl`` after its last claim.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from polyrelay.store import models

_TABLE = models.JobLease.__table__


def claim(engine: Engine, name: str, node: str, ttl_s: float) -> bool:
    """Claim or renew ``name`` for ``node``; whether ``node`` holds it now."""
    now_ms = int(time.time() * 1000)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_TABLE).values(name=name, node=node, expires_at=now_ms + int(ttl_s * 1000))
    statement = statement.on_conflict_do_update(
        index_elements=[_TABLE.c.name],
        set_={"node": statement.excluded.node, "expires_at": statement.excluded.expires_at},
        where=or_(_TABLE.c.node == statement.excluded.node, _TABLE.c.expires_at < now_ms))
    with engine.begin() as connection:
        connection.execute(statement)
        return connection.execute(select(_TABLE.c.node).where(_TABLE.c.name == name)).scalar_one() == node


def release(engine: Engine, name: str, node: str) -> None:
    """Give the job up at a graceful stop, so another node takes it at its next round."""
    with engine.begin() as connection:
        connection.execute(_TABLE.update().where(_TABLE.c.name == name, _TABLE.c.node == node).values(expires_at=0))
