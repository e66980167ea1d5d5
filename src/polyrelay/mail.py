"""Outgoing e-mail, one SMTP server for everything that writes to people: alerts to the operator, and
verification and password-reset mail to users. Top-level, so both the alerts and the API can use it."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from pydantic import BaseModel, ConfigDict, Field


class SmtpSettings(BaseModel):
    """The ``smtp:`` block (docs/platform.md): the server polyrelay hands its mail to."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    user: str | None = None
    password: str | None = None
    starttls: bool = True
    sender: str = Field(alias="from")
    timeout_s: float = Field(default=10.0, gt=0, description="Per SMTP session.")


def send(settings: SmtpSettings, to: list[str], subject: str, text: str) -> None:
    """Deliver one plain-text message; blocks (smtplib), so callers run it off the event loop."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.sender
    message["To"] = ", ".join(to)
    message.set_content(text)
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context())  # verify the server, unlike the default
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(message)


async def send_async(settings: SmtpSettings, to: list[str], subject: str, text: str) -> None:
    await asyncio.to_thread(send, settings, to, subject, text)
