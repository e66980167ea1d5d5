"""A real SMTP server on loopback (``aiosmtpd``) that keeps every message it is handed."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import free_port


class Mailbox:
    """aiosmtpd handler: keeps every message it is handed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, _class=EmailMessage, policy=default))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in list(self.messages) if m["To"] == address]


def smtp_server(mailbox: Mailbox) -> Controller:
    """A started SMTP server handing its mail to ``mailbox``; ``.port`` is where, ``.stop()`` ends it."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller
