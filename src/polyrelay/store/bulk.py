"""Driver-level bulk inserts for the batching writer's append-only tables.

The writer's thread shares the GIL with the event loop, so every microsecond of Python
it runs per row can delay a request. So a row becomes its parameter tuple when it is
recorded, on the loop (``row``, ~10 µs, through the column types' own bind processors, so
the stored values are exactly what SQLAlchemy would store), and the DB thread only sends
tuples. On SQLite it sends ~35 rows per ``INSERT``: sqlite3's ``executemany`` releases and
retakes the GIL around every row, and the loop keeps losing that race (numbers in
``writer.py``). psycopg keeps its ``executemany``: multi-row statements cost it three times
the CPU (``bench/writer_flush.py``: ~90 ms instead of ~30 ms per 500 rows).

Every value is bounded as it is recorded (``bound_for``), from the column's own SQLAlchemy
type so the limits never drift from the schema: strings cut to the column's length, NUL
bytes and lone surrogates removed, integers clamped to the type's range, NaN made 0.
PostgreSQL refuses each of these (SQLite stores most of them), and one refused row fails
the whole ``INSERT`` of a batch. Bounding costs 3-4 µs a row (thread CPU, ~25 columns).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Float, Integer, SmallInteger, String, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

# Bound parameters per SQLite statement: SQLite's old default limit, and few enough (~35
# usage rows) that one statement's bind-and-step holds the DB thread only briefly.
_SQLITE_MAX_PARAMS = 999

_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}

# Most specific first: BigInteger and SmallInteger are Integers too.
_INTEGER_BITS: tuple[tuple[type[Integer], int], ...] = ((BigInteger, 64), (SmallInteger, 16), (Integer, 32))

Bound = Callable[[Any], Any]


def integer_range(kind: TypeEngine[Any]) -> tuple[int, int]:
    """The values an integer column type holds on PostgreSQL (SQLite is given the same limits)."""
    bits = next(bits for integer, bits in _INTEGER_BITS if isinstance(kind, integer))
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def bound_for(column: Column[Any]) -> Bound | None:
    """A function making any value of the column's type storable in it, or None when every value is."""
    kind = column.type
    if isinstance(kind, String):  # Text too
        return _text_bound(kind.length)
    if isinstance(kind, Integer):
        return _integer_bound(*integer_range(kind))
    if isinstance(kind, Float):
        return _float_bound
    return None


def _text_bound(length: int | None) -> Bound:
    limit = length if length is not None else sys.maxsize

    def bound(value: Any) -> Any:
        if value.__class__ is not str or (len(value) <= limit and value.isascii() and "\x00" not in value):
            return value  # the usual case, kept to three cheap checks: this runs on the loop for every row
        value = value.replace("\x00", "")
        value = value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate cannot be stored: "?"
        return value if len(value) <= limit else value[:length]

    return bound


def _integer_bound(low: int, high: int) -> Bound:
    def bound(value: Any) -> Any:
        if value.__class__ is int and low <= value <= high:
            return value
        if isinstance(value, float) and math.isnan(value):
            return 0
        if isinstance(value, (int, float)) and not low <= value <= high:
            return low if value < low else high
        return value

    return bound


def _float_bound(value: Any) -> Any:
    return 0.0 if value.__class__ is float and math.isnan(value) else value


class Bounds:
    """``bound_for`` of every column of a table, for values written by ``UPDATE`` (not ``BulkInsert``)."""

    def __init__(self, table: Table) -> None:
        self._bounds = {column.name: bound for column in table.columns if (bound := bound_for(column))}

    def apply(self, values: Mapping[str, Any]) -> dict[str, Any]:
        bounds = self._bounds
        return {name: value if value is None or name not in bounds else bounds[name](value)
                for name, value in values.items()}


_KEEP = object()  # a column ``stripped`` leaves as it is


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    default: Callable[[], Any]
    prepare: Callable[[Any], Any] | None  # the column's bound, then its type's bind processor
    blank: Any  # what ``stripped`` puts in its place (a free-text column's default), or _KEEP


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
            out.append(value if field.prepare is None or value is None else field.prepare(value))
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

    def stripped(self, dialect: Dialect, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The row with every free-text column (a string with a default) back at its default."""
        fields = self._plan_for(dialect).fields
        return tuple(value if field.blank is _KEEP else field.blank for field, value in zip(fields, row))

    def named(self, dialect: Dialect, row: tuple[Any, ...]) -> dict[str, Any]:
        """A row made by ``row`` as a dict keyed by column name again."""
        return {field.name: value for field, value in zip(self._plan_for(dialect).fields, row)}

    def positions(self, dialect: Dialect) -> dict[str, int]:
        """Where each column is in a row made by ``row``, to read a few without ``named``'s dict."""
        return {field.name: index for index, field in enumerate(self._plan_for(dialect).fields)}

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
        fields = tuple(_field(c, dialect) for c in columns)
        return _Plan(head, row_sql, fields, frozenset(f.name for f in fields))


def _field(column: Column[Any], dialect: Dialect) -> _Field:
    default = _default_of(column)
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    bound = bound_for(column)
    prepare = (lambda value: process(bound(value))) if bound and process else bound or process
    blank: Any = _KEEP
    if isinstance(column.type, String) and column.default is not None:
        blank = default() if process is None else process(default())
    return _Field(column.name, default, prepare, blank)


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
