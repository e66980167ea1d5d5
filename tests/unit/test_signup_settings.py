"""The settings of account mail and sign-up: which SMTP server mail goes through, what start-up refuses,
and which addresses the domain rules let sign up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from polyrelay.api.signup_policy import SignupSettings, refusal
from polyrelay.config import Settings

SERVER = {"host": "smtp.example.test", "from": "relay@example.test"}


def test_alert_email_uses_the_smtp_block_or_the_server_written_beside_its_addresses() -> None:
    shared = Settings(smtp=SERVER, alerts={"email": {"to": ["ops@example.test"]}})
    assert shared.mail_server is not None and shared.mail_server.host == "smtp.example.test"
    older = Settings(alerts={"email": {**SERVER, "host": "alerts.example.test", "to": ["ops@example.test"]}})
    assert older.mail_server is not None and older.mail_server.host == "alerts.example.test"
    with pytest.raises(ValidationError, match="alerts.email needs an SMTP server"):
        Settings(alerts={"email": {"to": ["ops@example.test"]}})


def test_open_sign_up_with_verification_needs_a_mail_server_and_a_public_url() -> None:
    for missing in ({"smtp": SERVER}, {"signup": {"mode": "open", "public_url": "https://relay.example.test"}}):
        with pytest.raises(ValidationError, match=r"needs an smtp: block and public_url \(or signup.public_url\)"):
            Settings(**{"signup": {"mode": "open"}, **missing})
    Settings(smtp=SERVER, signup={"mode": "open", "public_url": "https://relay.example.test"})
    one = Settings(smtp=SERVER, signup={"mode": "open"}, public_url="https://relay.example.test")
    assert one.signup.public_url == one.sso.public_url == one.payments.public_url == "https://relay.example.test"
    own = Settings(public_url="https://relay.example.test", payments={"public_url": "https://pay.example.test"})
    assert (own.payments.public_url, own.console.public_url) == ("https://pay.example.test", "https://relay.example.test")
    Settings(signup={"mode": "open", "require_email_verification": False})


@pytest.mark.parametrize(("email", "allowed"), [
    ("ada@example.test", True),
    ("ada@team.example.test", True),
    ("ada@elsewhere.test", False),
    ("ada@blocked.example.test", False),
    ("ada@mailinator.com", False),
])
def test_domain_rules(email: str, allowed: bool) -> None:
    rules = SignupSettings(allowed_domains=["Example.test", "mailinator.com"], denied_domains=["@blocked.example.test"])
    assert (refusal(rules, email) is None) is allowed
