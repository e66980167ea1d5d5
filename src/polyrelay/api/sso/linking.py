"""Which user an identity signs in: its linked user; else the user whose verified e-mail the provider
verified too; else a new user when the provider provisions; else a refusal with a code the console explains."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from polyrelay.api.sso.identity import Identity
from polyrelay.api.sso.settings import SsoProvider
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class Refused(Exception):
    """The identity may not sign in; ``code`` is shown to the user (``sso_error``)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _domain_allowed(provider: SsoProvider, identity: Identity) -> bool:
    if not provider.allowed_domains:
        return True
    return bool(identity.email and identity.email_verified
                and identity.email.rsplit("@", 1)[-1] in provider.allowed_domains)


def _link(session: Session, provider: SsoProvider, identity: Identity, user_id: int) -> None:
    session.add(models.UserIdentity(provider=provider.name, subject=identity.subject, user_id=user_id,
                                    email=identity.email))


def _enabled(user: models.User | None) -> int:
    if user is None or not user.enabled:
        raise Refused("account_disabled")
    return user.id


def _free_name(session: Session, wanted: str) -> str:
    base = _NAME_CHARS.sub("-", wanted).strip("-.")[:48] or "user"
    for name in (base, *(f"{base}-{n}" for n in range(2, 10)), f"{base}-{secrets.token_hex(4)}"):
        if session.scalar(select(models.User.id).where(models.User.name == name)) is None:
            return name
    raise Refused("no_free_name")


def _provision(session: Session, provider: SsoProvider, identity: Identity) -> int:
    if identity.email is not None and session.scalar(
            select(models.User.id).where(models.User.email == identity.email)) is not None:
        raise Refused("email_in_use")  # a user has the address but never verified it: an admin must decide
    verified = identity.email_verified and identity.email is not None
    user = models.User(name=_free_name(session, identity.username), role="user", group=provider.group,
                       balance_micros=0, unlimited=False, enabled=True, password_hash=None,
                       email=identity.email if verified else None, email_verified=verified)
    session.add(user)
    session.flush()
    bump_records_version(session, changes.user(user.id))
    return user.id


def sign_in(engine: Engine, provider: SsoProvider, identity: Identity) -> int:
    """The user ``identity`` signs in, linked (or created) in the same transaction; raises Refused."""
    with Session(engine) as session, session.begin():
        linked = session.scalar(select(models.UserIdentity).where(
            models.UserIdentity.provider == provider.name, models.UserIdentity.subject == identity.subject))
        if linked is not None:
            user = session.get(models.User, linked.user_id)
            if user is not None:
                return _enabled(user)
            session.delete(linked)  # its user was deleted: the identity is free again
            session.flush()
        if not _domain_allowed(provider, identity):
            raise Refused("domain_not_allowed")
        if identity.email is not None and identity.email_verified:
            # Both sides must have proven the address: the provider, and the user to this gateway.
            user = session.scalar(select(models.User).where(models.User.email == identity.email,
                                                            models.User.email_verified.is_(True)))
            if user is not None:
                user_id = _enabled(user)
                _link(session, provider, identity, user_id)
                return user_id
        if provider.auto_provision:
            user_id = _provision(session, provider, identity)
            _link(session, provider, identity, user_id)
            return user_id
        raise Refused("email_not_verified" if identity.email and not identity.email_verified else "no_account")


def link(engine: Engine, provider: SsoProvider, identity: Identity, user_id: int) -> None:
    """Link ``identity`` to the signed-in ``user_id``; refused when it already signs in someone else."""
    with Session(engine) as session, session.begin():
        linked = session.scalar(select(models.UserIdentity).where(
            models.UserIdentity.provider == provider.name, models.UserIdentity.subject == identity.subject))
        if linked is not None and linked.user_id != user_id:
            if session.get(models.User, linked.user_id) is not None:
                raise Refused("identity_in_use")
            session.delete(linked)
            session.flush()
            linked = None
        if linked is None:
            _enabled(session.get(models.User, user_id))
            _link(session, provider, identity, user_id)
