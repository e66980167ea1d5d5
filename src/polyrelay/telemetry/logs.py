"""Structured request logs (``log_format: json``) and a quiet start-up.

One JSON line per finished request goes to the ``polyrelay.access`` logger, built from the
usage row (``relay.settlement.usage_row``). The row names the caller's key only by its name:
the key itself never reaches it, and neither does any upstream key (errors are scrubbed).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

access = logging.getLogger("polyrelay.access")
_enabled = False


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object: time, level, logger, message, and an access record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(level: str, log_format: str) -> None:
    """Set up the root logger once per process, as text (the default) or JSON lines."""
    global _enabled
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _enabled = log_format == "json"
    # Alembic announces each of its plugins and its context at info level on every migration.
    for name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def request(row: dict[str, Any]) -> None:
    """Log one finished request as a JSON line, when ``log_format`` is json."""
    if not _enabled:
        return
    access.info("request", extra={"fields": {
        "request_id": row["request_id"], "key_name": row["token_name"], "user_id": row["user_id"],
        "family": row["family"], "endpoint": row["endpoint"], "model": row["model"],
        "channel": row["channel_name"], "status": row["status_code"], "stream": row["stream"],
        "attempts": row["attempts"], "latency_ms": round(row["latency_ms"], 2), "ttfb_ms": round(row["ttfb_ms"], 2),
        "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
        "cost_micros": row["cost_micros"], "client_ip": row["client_ip"], "error": row["error"][:300],
    }})
