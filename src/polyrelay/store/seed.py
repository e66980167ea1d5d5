"""Load the operator's YAML records (channels, tokens, prices) into the database.

Records are upserted by name, so restarting with the same file changes nothing and
spend already recorded on a token is kept. Records absent from the file are left
alone: the admin API may have created them.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from polyrelay.billing.meter import Price, usd_to_micros
from polyrelay.config import Settings
from polyrelay.relay.auth import generate_key, hash_key, key_hint
from polyrelay.store import models
from polyrelay.store.db import bump_records_version

log = logging.getLogger("polyrelay")


def seed_from_settings(engine: Engine, settings: Settings) -> list[tuple[str, str]]:
    """Upsert the file's records; return ``(token name, key)`` for keys generated now."""
    generated: list[tuple[str, str]] = []
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

        for token in settings.tokens:
            row = session.scalar(select(models.Token).where(models.Token.name == token.name))
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

        bump_records_version(session)
    return generated
