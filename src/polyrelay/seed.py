"""Load the operator's YAML records (channels, tokens, prices) into the database.

Records are upserted by name, so restarting with the same file changes nothing and
spend already recorded on a token is kept. Records absent from the file are left
alone: the admin API may have created them. Nodes starting at once on one PostgreSQL
database seed one after the other (``startup_lock``); a row another writer (the admin
API) inserted meanwhile only makes the whole upsert run again.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from polyrelay.billing.accounts import hash_password, post, verify_password
from polyrelay.billing.meter import Price, usd_to_micros
from polyrelay.config import Settings, TokenConfig
from polyrelay.keys import generate_key, hash_key, key_hint
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version, startup_lock

log = logging.getLogger("polyrelay")


_ATTEMPTS = 3


def seed_from_settings(engine: Engine, settings: Settings) -> list[tuple[str, str]]:
    """Upsert the file's records; return ``(token name, key)`` for keys generated now."""
    with startup_lock(engine):
        for _ in range(_ATTEMPTS - 1):
            try:
                return _seed(engine, settings)
            except IntegrityError:
                log.warning("a config record was written concurrently; seeding again")
        return _seed(engine, settings)


def _seed(engine: Engine, settings: Settings) -> list[tuple[str, str]]:
    generated: list[tuple[str, str]] = []
    touched: set[changes.Change] = set()
    with Session(engine) as session, session.begin():
        for channel in settings.channels:
            row = session.scalar(select(models.Channel).where(models.Channel.name == channel.name))
            if row is None:
                row = models.Channel(name=channel.name)
                session.add(row)
            row.type = channel.type
            row.base_url = channel.base_url
            row.keys = list(channel.keys)
            row.models = list(channel.models)
            row.model_mapping = dict(channel.model_mapping)
            row.priority = channel.priority
            row.weight = channel.weight
            row.enabled = channel.enabled
            row.timeout_s = channel.timeout_s
            row.connect_timeout_s = channel.connect_timeout_s
            row.options = dict(channel.options)

        for name, group in settings.groups.items():
            group_row = session.get(models.Group, name)
            if group_row is None:
                group_row = models.Group(name=name)
                session.add(group_row)
            group_row.ratio_ppm = round(group.ratio * 1_000_000)
            group_row.channels = list(group.channels) if group.channels is not None else None

        for user in settings.users:
            user_row = session.scalar(select(models.User).where(models.User.name == user.name))
            if user_row is None:
                user_row = models.User(name=user.name, balance_micros=0)
                session.add(user_row)
                session.flush()
                if user.balance_usd:
                    post(session, user_row.id, "topup", usd_to_micros(user.balance_usd), f"seed-user-{user_row.id}",
                         "initial balance from the config file")
            user_row.role, user_row.group, user_row.unlimited = user.role, user.group, user.unlimited
            user_row.enabled, user_row.rpm_limit, user_row.tpm_limit = user.enabled, user.rpm_limit, user.tpm_limit
            if user.password is not None and not verify_password(user_row.password_hash, user.password):
                user_row.password_hash = hash_password(user.password)
            touched.add(changes.user(user_row.id))
        session.flush()

        for token in settings.tokens:
            owner = None
            if token.user is not None:
                owner = session.scalar(select(models.User.id).where(models.User.name == token.user))
                if owner is None:
                    raise ValueError(f"token '{token.name}' belongs to user '{token.user}', who is not under `users`")
            row = _file_token(session, token, owner)
            if row is None:
                key = token.key or generate_key()
                if token.key is None:
                    generated.append((token.name, key))
                row = models.Token(name=token.name, key_hash=hash_key(key), key_hint=key_hint(key))
                session.add(row)
            elif token.key is not None and row.key_hash != hash_key(token.key):
                row.key_hash, row.key_hint = hash_key(token.key), key_hint(token.key)
            row.quota_micros = usd_to_micros(token.quota_usd) if token.quota_usd is not None else None
            row.models = list(token.models) if token.models is not None else None
            row.expires_at = token.expires_at
            row.enabled = token.enabled
            row.allowed_ips = list(token.allowed_ips) if token.allowed_ips is not None else None
            row.rpm_limit, row.tpm_limit = token.rpm_limit, token.tpm_limit
            if owner is not None:
                row.user_id = owner
            session.flush()
            touched.add(changes.token(row.id))

        # Tokens without an owner (from the file, or from before accounts existed) get an
        # unlimited user of their own name: the token's quota stays its own limit, as before.
        for row in session.scalars(select(models.Token).where(models.Token.user_id.is_(None))).all():
            owner = session.scalar(select(models.User.id).where(models.User.name == row.name))
            if owner is None:
                user_row = models.User(name=row.name, unlimited=True, balance_micros=0)
                session.add(user_row)
                session.flush()
                owner = user_row.id
            row.user_id = owner
            touched.update((changes.token(row.id), changes.user(owner)))

        for model, price in settings.prices.items():
            values = {
                name: usd_to_micros(usd) if (usd := getattr(price, name)) is not None else None
                for name in Price.field_names()
            }
            row = session.get(models.Price, model)
            if row is None:
                session.add(models.Price(model=model, **values))
            else:
                session.execute(update(models.Price).where(models.Price.model == model).values(**values))

        bump_records_version(session, changes.CHANNELS, changes.GROUPS, changes.PRICES, *touched)
    return generated


def _file_token(session: Session, token: TokenConfig, owner: int | None) -> models.Token | None:
    """The row a file token updates. Names are unique per user only, so among the tokens of that
    name: the one its owner has (``user:``, else the user named like the token), else one with no
    owner yet, else the one with the file's key (it moved to another user), else the only one."""
    rows = list(session.scalars(select(models.Token).where(models.Token.name == token.name)))
    if owner is None:
        owner = session.scalar(select(models.User.id).where(models.User.name == token.name))
    key_hash = hash_key(token.key) if token.key is not None else None
    preferred = ([r for r in rows if owner is not None and r.user_id == owner]
                 + [r for r in rows if r.user_id is None]
                 + [r for r in rows if key_hash is not None and r.key_hash == key_hash])
    if preferred:
        return preferred[0]
    return rows[0] if len(rows) == 1 and token.user is None else None
