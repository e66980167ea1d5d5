"""The ``sso`` settings: the identity providers the console offers besides the password form."""

from __future__ import annotations

from typing import Literal

from polyrelay.urls import HttpUrl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

GITHUB_URLS = ("https://github.com", "https://api.github.com")


class SsoProvider(BaseModel):
    """One button on the sign-in page: a generic OpenID Connect issuer or a GitHub OAuth app."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="In the callback URL: /api/auth/sso/{name}/callback.")
    kind: Literal["oidc", "github"] = "oidc"
    label: str = Field(default="", max_length=64, description="The button's text; absent: the name.")
    issuer: HttpUrl | None = Field(default=None, description="oidc: the issuer; its /.well-known/openid-configuration is read.")
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: SecretStr = Field(description="A secret: write it as ${ENV_VAR} in the file.")
    scopes: list[str] = Field(default=[], description="Absent: 'openid email profile' (oidc), 'read:user user:email' (github).")
    auto_provision: bool = Field(default=False, description="Create a user for a new identity with a verified e-mail.")
    group: str = Field(default="default", max_length=64, description="The group auto-provisioned users join.")
    allowed_domains: list[str] = Field(default=[], description="E-mail domains that may link or be provisioned; empty: any.")
    github_url: HttpUrl = Field(default=GITHUB_URLS[0], description="github: where /login/oauth/* is (GitHub Enterprise).")
    github_api_url: HttpUrl = Field(default=GITHUB_URLS[1], description="github: the REST API (/user, /user/emails).")

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower().lstrip("@") for domain in value]

    @model_validator(mode="after")
    def _issuer_for_oidc(self) -> "SsoProvider":
        if self.kind == "oidc" and not self.issuer:
            raise ValueError(f"sso provider '{self.name}': an oidc provider needs 'issuer'")
        return self

    @property
    def button(self) -> str:
        return self.label or self.name

    @property
    def scope(self) -> str:
        default = ["openid", "email", "profile"] if self.kind == "oidc" else ["read:user", "user:email"]
        return " ".join(self.scopes or default)


class SsoSettings(BaseModel):
    """Single sign-on (see docs/platform.md)."""

    model_config = ConfigDict(extra="forbid")

    providers: list[SsoProvider] = []
    public_url: HttpUrl | None = Field(
        default=None, description="The console's external URL, for redirect URIs; absent: the URL the request came to.",
    )
    allow_private_hosts: bool = Field(
        default=False, description="Let discovery, token and key fetches reach loopback/private addresses (an issuer on the LAN).",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=60, description="Each call to an identity provider.")

    @field_validator("providers")
    @classmethod
    def _unique(cls, value: list[SsoProvider]) -> list[SsoProvider]:
        names = [provider.name for provider in value]
        if len(names) != len(set(names)):
            raise ValueError("sso provider names must be unique")
        return value

    def provider(self, name: str) -> SsoProvider | None:
        return next((provider for provider in self.providers if provider.name == name), None)
