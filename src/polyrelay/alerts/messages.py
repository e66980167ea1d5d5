"""An alert and the bodies each kind of webhook expects; pure functions, so the shapes are unit-testable.

Bodies carry names and numbers only (channel and user names, counts, rates): never an upstream key,
a caller's key or a request body. Signatures follow the vendors' custom-bot docs: Feishu signs
``"{timestamp}\\n{secret}"`` (seconds) as the HMAC-SHA256 key of an empty message and puts
``timestamp`` and ``sign`` in the body; DingTalk signs the same string (milliseconds) with the secret
as the key and puts them in the URL's query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # channel_disabled, channel_enabled, error_rate, balance_low, task_backlog, writer_failing, ...
    severity: str  # one of SEVERITIES
    subject: str
    details: dict[str, Any]
    at: datetime
    user_id: int | None = None  # the user a balance alert is about (never in a body: the name is in details)
    repeat: bool = False  # a reminder of a condition already told

    def resolved(self, at: datetime) -> Alert:
        """The all-clear of a condition that ended."""
        return Alert(f"{self.kind}_resolved", "info", f"Resolved: {self.subject}", self.details, at, self.user_id)

    def again(self, at: datetime) -> Alert:
        """The reminder of a condition still going on after ``repeat_s``."""
        return replace(self, subject=f"Still: {self.subject}", at=at, repeat=True)

    def text(self) -> str:
        lines = [f"[polyrelay {self.severity}] {self.subject}"]
        lines += [f"{key}: {value}" for key, value in self.details.items()]
        lines.append(f"at: {self.at.isoformat(timespec='seconds')}")
        return "\n".join(lines)


def to_user(alert: Alert) -> Alert:
    """A low-balance alert as the user it is about reads it: their balance and the threshold, nothing else."""
    details = {"account": alert.details["user"], "balance_usd": alert.details["balance_usd"]}
    return replace(alert, subject=f"Your polyrelay balance is below {alert.details['threshold_usd']} USD",
                   details=details)


def generic(alert: Alert) -> dict[str, Any]:
    return {"kind": alert.kind, "severity": alert.severity, "subject": alert.subject, "details": alert.details,
            "at": alert.at.isoformat()}


def slack(alert: Alert) -> dict[str, Any]:
    return {"text": alert.text()}


def feishu(alert: Alert, secret: str | None, now_s: int) -> dict[str, Any]:
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": alert.text()}}
    if secret:
        digest = hmac.new(f"{now_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
        body.update(timestamp=str(now_s), sign=base64.b64encode(digest).decode())
    return body


def dingtalk(alert: Alert) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": alert.text()}}


def dingtalk_url(url: str, secret: str | None, now_ms: int) -> str:
    """The webhook URL (it already holds ``access_token``) with ``timestamp`` and ``sign`` when signed."""
    if not secret:
        return url
    digest = hmac.new(secret.encode(), f"{now_ms}\n{secret}".encode(), hashlib.sha256).digest()
    query = urlencode({"timestamp": now_ms, "sign": base64.b64encode(digest).decode()})
    return f"{url}{'&' if '?' in url else '?'}{query}"
