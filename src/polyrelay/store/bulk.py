"""Driver-level bulk inserts for the batching writer's append-only tables.

The writer's thread shares the GIL with the event loop, so every microsecond of Python
it runs per row can delay a request. So a row becomes its parameter tuple when it is
recorded, on the loop (``row``, ~10 µs, through the column types' own bind processors, so
the stored values are exactly what SQLAlchemy would store), and the DB thread only sends
tuples. On SQLite it sends ~35 rows per ``INSERT``: sqlite3's ``executemany`` releases and
retakes the GIL around every row, and the loop keeps losing that race (numbers in
``writer.py``). psycopg keeps its ``executemany``: multi-row statements cost it three times
the CPU (``bench/writer_flush.py``: ~90 ms instead of ~30 ms per 500 rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

# Bound parameters per SQLite statement: SQLite's old default limit, and few enough (~35
# usage rows) that one statement's bind-and-step holds the DB thread only briefly.
_SQLITE_MAX_PARAMS = 999

_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    default: Callable[[], Any]
    process: Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    head: str  # INSERT INTO t (columns) VALUES
    row_sql: str  # (?, ?, ...)
    fields: tuple[_Field, ...]
    names: frozenset[str]

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        if not row.keys() <= self.names:
            raise ValueError(f"unknown columns {sorted(row.keys() - self.names)}")
        out = []
        for field in self.fields:
            value = row[field.name] if field.name in row else field.default()
            out.append(value if field.process is None or value is None else field.process(value))
        return tuple(out)


class BulkInsert:
    """``INSERT`` of many rows into one table; ``row`` turns a dict keyed by column name into a
    row, missing columns getting their defaults."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._plans: dict[str, _Plan] = {}

    def row(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's parameters for one row, in the statement's column order."""
        return self._plan_for(dialect).values(values)

    def execute(self, connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert rows made by ``row``: many per statement on SQLite, else one ``executemany``."""
        plan = self._plan_for(connection.dialect)
        if connection.dialect.name != "sqlite":
            if rows:
                connection.exec_driver_sql(plan.head + plan.row_sql, list(rows))
            return
        per = max(1, _SQLITE_MAX_PARAMS // len(plan.fields))
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            sql = plan.head + ", ".join([plan.row_sql] * len(chunk))
            connection.exec_driver_sql(sql, tuple(chain.from_iterable(chunk)))

    def _plan_for(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = self._plan(dialect)
        return plan

    def _plan(self, dialect: Dialect) -> _Plan:
        placeholder = _PLACEHOLDERS.get(dialect.paramstyle)
        if placeholder is None:
            raise NotImplementedError(f"paramstyle {dialect.paramstyle!r}")
        columns = [c for c in self._table.columns if not (c.primary_key and c.autoincrement)]
        quote = dialect.identifier_preparer.quote
        head = f"INSERT INTO {quote(self._table.name)} ({', '.join(quote(c.name) for c in columns)}) VALUES "
        row_sql = f"({', '.join([placeholder] * len(columns))})"
        fields = tuple(
            _Field(c.name, _default_of(c), c.type.dialect_impl(dialect).bind_processor(dialect)) for c in columns
        )
        return _Plan(head, row_sql, fields, frozenset(f.name for f in fields))


def _default_of(column: Any) -> Callable[[], Any]:
    default = column.default
    if default is None:
        return lambda: None
    if default.is_callable:
        return lambda: default.arg(None)
    if default.is_scalar:
        value = default.arg
        return lambda: value
    raise NotImplementedError(f"column {column.name} has a SQL-expression default")
