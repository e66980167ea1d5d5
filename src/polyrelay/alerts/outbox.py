"""Delivery: each destination (a webhook, the email) has its own queue, so one that is down only
delays its own alerts; what failed is logged and tried again at the next interval."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import time
from collections import deque
from typing import Generic, TypeVar

import aiohttp
import orjson

from polyrelay import mail
from polyrelay.alerts import messages
from polyrelay.alerts.messages import Alert
from polyrelay.alerts.settings import AlertSettings, WebhookSettings

log = logging.getLogger("polyrelay.alerts")

_QUEUE = 200  # alerts held per destination while it is down; the oldest go first
_REFUSAL = {"feishu": "code", "dingtalk": "errcode"}  # the field of the answer that is non-zero on refusal
Item = TypeVar("Item")
Mail = tuple[Alert, tuple[str, ...]]  # an alert and its recipients


class _Destination(Generic[Item]):
    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: deque[Item] = deque(maxlen=_QUEUE)
        self.failing = False

    async def deliver(self, item: Item) -> None:
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


class _Webhook(_Destination[Alert]):
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


class _Email(_Destination[Mail]):
    """The operator's mail, or (a destination of its own, so a user's address never holds up the
    operator's alerts) the users' balance mails."""

    def __init__(self, name: str, smtp: mail.SmtpSettings) -> None:
        super().__init__(name)
        self._smtp = smtp

    async def deliver(self, item: Mail) -> None:
        alert, to = item
        try:
            await mail.send_async(self._smtp, list(to), f"[polyrelay] {alert.subject}", alert.text())
        except smtplib.SMTPRecipientsRefused:  # an address the server will never take: retrying cannot help
            log.warning("the mail server refused the address of %s's alert; not retried", self.name)


class Outbox:
    def __init__(self, settings: AlertSettings, session: aiohttp.ClientSession, smtp: mail.SmtpSettings | None) -> None:
        """``smtp``: the server mail goes through (``Settings.mail_server``); None: no mail at all."""
        self._webhooks = [_Webhook(w, session, settings.timeout_s) for w in settings.webhooks]
        self._email = _Email("email", smtp) if settings.email is not None and smtp is not None else None
        self._users = _Email("users' email", smtp) if smtp is not None else None
        self._operator_to = tuple(settings.email.to) if settings.email else ()

    @property
    def mails_users(self) -> bool:
        """Whether users can be told anything: only when a mail server is configured."""
        return self._users is not None

    def put(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            log.warning("alert %s (%s): %s", alert.kind, alert.severity, alert.subject)
            for webhook in self._webhooks:
                webhook.queue.append(alert)
            if self._email is not None:
                self._email.queue.append((alert, self._operator_to))

    def tell_user(self, alert: Alert, address: str) -> None:
        """Mail ``alert`` to a user's (verified) address; nothing without a mail server."""
        if self._users is not None:
            self._users.queue.append((alert, (address,)))

    async def send(self) -> None:
        destinations: list[_Destination[Alert] | _Destination[Mail]] = [*self._webhooks]
        destinations += [d for d in (self._email, self._users) if d is not None]
        await asyncio.gather(*(d.drain() for d in destinations))
