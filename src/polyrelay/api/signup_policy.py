"""The ``signup:`` block (docs/platform.md, "Sign-up and e-mail") and who may sign up with which address."""

from __future__ import annotations

from typing import Literal

from polyrelay.urls import HttpUrl
from pydantic import BaseModel, ConfigDict, Field, field_validator


class SignupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["closed", "open", "invite-only"] = Field(
        default="closed", description="closed: only administrators create users; invite-only: a user's invite code "
                                      "is needed.")
    require_email_verification: bool = Field(
        default=True, description="Self-signed-up users cannot sign in until they followed the link mailed to them.")
    default_group: str = Field(default="default", min_length=1, max_length=64)
    starting_balance_usd: float = Field(default=0.0, ge=0, le=1_000_000)
    allowed_domains: list[str] = Field(default=[], description="Only these e-mail domains (and their subdomains); "
                                                               "empty: any.")
    denied_domains: list[str] = Field(default=[], description="Never these domains (and their subdomains).")
    deny_disposable: bool = Field(default=True, description="Refuse the throwaway-mail domains listed by the "
                                                            "disposable-email-domains package.")
    per_ip_per_hour: int = Field(default=5, ge=1, description="Sign-ups from one client address per hour and process.")
    public_url: HttpUrl | None = Field(default=None, description="The console's address as users reach it; the base of "
                                                             "the links mailed to them.")
    verification_ttl_s: int = Field(default=24 * 3600, gt=0)
    reset_ttl_s: int = Field(default=3600, gt=0)
    resend_interval_s: int = Field(default=60, ge=0, description="At most one verification or reset mail per user "
                                                                 "this often.")

    @field_validator("allowed_domains", "denied_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower().lstrip("@") for domain in value]



def _within(domain: str, listed: list[str] | set[str]) -> bool:
    """Whether ``domain`` or one of its parent domains is listed (mail.example.com is within example.com)."""
    parts = domain.split(".")
    return any(".".join(parts[i:]) in listed for i in range(len(parts) - 1))


def refusal(settings: SignupSettings, email: str) -> str | None:
    """Why an address may not sign up (a sentence for the user), or None when it may."""
    domain = email.rpartition("@")[2]
    if settings.allowed_domains and not _within(domain, settings.allowed_domains):
        return "Sign-up is open to addresses at " + ", ".join(settings.allowed_domains) + " only."
    if _within(domain, settings.denied_domains):
        return f"Addresses at {domain} cannot sign up."
    if settings.deny_disposable:
        from disposable_email_domains import blocklist  # deferred: a set of ~10,000 names, needed only here

        if _within(domain, blocklist):
            return "Disposable e-mail addresses cannot sign up; use a permanent one."
    return None
