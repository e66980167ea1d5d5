"""The mail sent to users: the e-mail verification link and the password-reset link.

Sent in the background: an answer never waits for (or, by its timing, tells about) the SMTP server,
and a failure is logged without the message, which holds a token.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request

from polyrelay import mail
from polyrelay.config import Settings

log = logging.getLogger("polyrelay")


class AccountMail:
    def __init__(self, settings: Settings) -> None:
        self._smtp = settings.mail_server
        self._base = settings.signup.public_url
        self._verify_hours = settings.signup.verification_ttl_s / 3600
        self._reset_minutes = settings.signup.reset_ttl_s / 60
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def configured(self) -> bool:
        return self._smtp is not None and self._base is not None

    def verification(self, to: str, name: str, token: str) -> None:
        link = f"{self._base}/#/verify?token={token}"
        self._send(to, "Confirm your e-mail address", (
            f"Hello {name},\n\nplease confirm that this is your e-mail address by opening this link:\n\n{link}\n\n"
            f"The link works once, for {self._verify_hours:g} hours. If you did not sign up, ignore this message.\n"))

    def reset(self, to: str, name: str, token: str) -> None:
        link = f"{self._base}/#/reset?token={token}"
        self._send(to, "Reset your password", (
            f"Hello {name},\n\nsomeone asked to reset the password of your account. To choose a new one, open:\n\n"
            f"{link}\n\nThe link works once, for {self._reset_minutes:g} minutes, and signs you out everywhere. "
            "If you did not ask for it, ignore this message: your password stays as it is.\n"))

    def _send(self, to: str, subject: str, text: str) -> None:
        assert self._smtp is not None
        task = asyncio.create_task(self._deliver(self._smtp, to, f"[polyrelay] {subject}", text))
        self._sending.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _deliver(smtp: mail.SmtpSettings, to: str, subject: str, text: str) -> None:
        try:
            await mail.send_async(smtp, [to], subject, text)
        except Exception as error:  # any failure: the user can ask for another link
            log.warning("account mail (%s) to a user at %s failed: %s", subject, to.rpartition("@")[2],
                        type(error).__name__)


def account_mail(request: Request) -> AccountMail:
    state = request.app.state
    if not hasattr(state, "account_mail"):
        state.account_mail = AccountMail(state.settings)
    return state.account_mail
