"""Delivery: each destination (a webhook, the email) has its own queue, so one that is down only
delays its own alerts; what failed is logged and tried again at the next interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import aiohttp
import orjson

from polyrelay import mail
from polyrelay.alerts import messages
from polyrelay.alerts.messages import Alert
from polyrelay.alerts.settings import AlertSettings, EmailSettings, WebhookSettings

log = logging.getLogger("polyrelay.alerts")

_QUEUE = 200  # alerts held per destination while it is down; the oldest go first
_REFUSAL = {"feishu": "code", "dingtalk": "errcode"}  # the field of the answer that is non-zero on refusal


class _Destination:
    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: deque[Alert] = deque(maxlen=_QUEUE)
        self.failing = False

    async def deliver(self, alert: Alert) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        while self.queue:
            try:
                await self.deliver(self.queue[0])
            except Exception as error:  # any failure: keep the alert for the next interval
                if not self.failing:
                    log.warning("alert to %s failed, retrying every interval: %s", self.name, error)
                self.failing = True
                return
            self.queue.popleft()
            if self.failing:
                log.warning("alerts to %s are delivered again", self.name)
                self.failing = False


class _Webhook(_Destination):
    def __init__(self, settings: WebhookSettings, session: aiohttp.ClientSession, timeout_s: float) -> None:
        super().__init__(f"{settings.format} webhook")
        self._settings = settings
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def deliver(self, alert: Alert) -> None:
        kind, url, secret = self._settings.format, self._settings.url, self._settings.secret
        if kind == "slack":
            body = messages.slack(alert)
        elif kind == "feishu":
            body = messages.feishu(alert, secret, int(time.time()))
        elif kind == "dingtalk":
            body, url = messages.dingtalk(alert), messages.dingtalk_url(url, secret, int(time.time() * 1000))
        else:
            body = messages.generic(alert)
        async with self._session.post(url, json=body, timeout=self._timeout, allow_redirects=False) as response:
            if response.status >= 300:
                raise RuntimeError(f"HTTP {response.status}")
            answer = await response.read()
        if kind in _REFUSAL:  # Feishu and DingTalk refuse (a bad signature, a rate limit) with HTTP 200
            try:
                parsed = orjson.loads(answer)
            except orjson.JSONDecodeError:
                parsed = None
            code = parsed.get(_REFUSAL[kind]) if isinstance(parsed, dict) else None
            if code:
                raise RuntimeError(f"{kind} answered {_REFUSAL[kind]} {code}: {answer[:200].decode(errors='replace')}")


class _Email(_Destination):
    def __init__(self, settings: EmailSettings, smtp: mail.SmtpSettings) -> None:
        super().__init__("email")
        self._to = settings.to
        self._smtp = smtp

    async def deliver(self, alert: Alert) -> None:
        await mail.send_async(self._smtp, self._to, f"[polyrelay] {alert.subject}", alert.text())


class Outbox:
    def __init__(self, settings: AlertSettings, session: aiohttp.ClientSession, smtp: mail.SmtpSettings | None) -> None:
        """``smtp``: the server the alert email goes through (``Settings.mail_server``); None without alert email."""
        self._destinations: list[_Destination] = [_Webhook(w, session, settings.timeout_s) for w in settings.webhooks]
        if settings.email is not None and smtp is not None:
            self._destinations.append(_Email(settings.email, smtp))

    def put(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            log.warning("alert %s (%s): %s", alert.kind, alert.severity, alert.subject)
            for destination in self._destinations:
                destination.queue.append(alert)

    async def send(self) -> None:
        await asyncio.gather(*(d.drain() for d in self._destinations))
