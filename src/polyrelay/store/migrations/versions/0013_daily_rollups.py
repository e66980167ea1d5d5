"""usage_daily, model_daily, channel_daily: daily sums of the usage log, backfilled from the rows already there

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa


revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Kept here rather than imported, so this step stays what it was when later models change.
_BUCKETS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


def _measures() -> list[sa.Column]:
    counts = ["requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros"]
    columns = [sa.Column(name, sa.BigInteger(), nullable=False) for name in counts]
    columns.append(sa.Column("latency_ms_sum", sa.Float(), nullable=False))
    columns += [sa.Column(f"latency_le_{bound}", sa.BigInteger(), nullable=False) for bound in _BUCKETS]
    return columns


def _sums() -> str:
    """The measures of a group of usage rows, as the writer adds them (refunds, status 0, are no request)."""
    request = "status_code > 0"
    above = [""] + [f" AND latency_ms > {low}" for low in _BUCKETS]
    buckets = [f"SUM(CASE WHEN {request} AND latency_ms <= {bound}{above[n]} THEN 1 ELSE 0 END)"
               for n, bound in enumerate(_BUCKETS)]
    return ", ".join([f"SUM(CASE WHEN {request} THEN 1 ELSE 0 END)",
                      "SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END)",
                      "SUM(prompt_tokens)", "SUM(completion_tokens)", "SUM(cost_micros)",
                      f"SUM(CASE WHEN {request} THEN latency_ms ELSE 0 END)", *buckets])


def _names() -> str:
    return ", ".join(["requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms_sum",
                      *(f"latency_le_{bound}" for bound in _BUCKETS)])


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        *_measures(),
    )
    op.create_index("ix_usage_daily_user_id_day_model", "usage_daily", ["user_id", "day", "model"])
    op.create_table(
        "model_daily",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        *_measures(),
    )
    op.create_table(
        "channel_daily",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("channel_id", sa.Integer(), primary_key=True),
        *_measures(),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "CAST(timezone('UTC', created_at) AS DATE)" if postgres else "date(created_at)"
    op.execute(f"INSERT INTO usage_daily (day, user_id, model, {_names()}) "
               f"SELECT {day}, COALESCE(user_id, 0), model, {_sums()} FROM usage_logs "
               f"GROUP BY {day}, COALESCE(user_id, 0), model")
    op.execute(f"INSERT INTO model_daily (day, model, {_names()}) "
               f"SELECT {day}, model, {_sums()} FROM usage_logs GROUP BY {day}, model")
    op.execute(f"INSERT INTO channel_daily (day, channel_id, {_names()}) "
               f"SELECT {day}, COALESCE(channel_id, 0), {_sums()} FROM usage_logs "
               f"GROUP BY {day}, COALESCE(channel_id, 0)")


def downgrade() -> None:
    op.drop_table("channel_daily")
    op.drop_table("model_daily")
    op.drop_index("ix_usage_daily_user_id_day_model", table_name="usage_daily")
    op.drop_table("usage_daily")
