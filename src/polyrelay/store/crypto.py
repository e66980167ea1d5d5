"""Secrets encrypted at rest (upstream keys, TOTP secrets): the secret key, and the column types that use it.

``channels.keys`` holds a Fernet token (AES-128-CBC + HMAC-SHA256, from ``cryptography``)
of the JSON list, so a copied database or backup does not hand out the upstream
accounts. Everything above the store sees the plaintext list. The secret key is
``POLYRELAY_SECRET_KEY`` (``polyrelay secret generate`` makes one); without it an SQLite
database gets a key file of its own, while PostgreSQL refuses to start, since every node
sharing the database must use the same key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, Engine, Integer, String, column, table, update
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator

log = logging.getLogger("polyrelay")

SECRET_KEY_ENV = "POLYRELAY_SECRET_KEY"
NEW_SECRET_KEY_ENV = "POLYRELAY_NEW_SECRET_KEY"

# The columns this module reads and writes itself, as stored (ciphertext), not through the model.
_channels = table("channels", column("id", Integer), column("name", String), column("keys", JSON))
_totp = table("user_totp", column("user_id", Integer), column("secret", String))


class SecretKeyError(Exception):
    """The secret key is missing, malformed or not the one the database was encrypted with."""


@dataclass(frozen=True)
class SecretKey:
    cipher: Fernet
    source: str  # where it came from, for messages: the variable's name or the key file's path
    file: Path | None = None  # the key file, when the key came from one


def generate_secret_key() -> str:
    return Fernet.generate_key().decode()


def parse_secret_key(value: str, source: str) -> Fernet:
    try:
        return Fernet(value.strip().encode())
    except ValueError:
        raise SecretKeyError(
            f"{source} is not a valid secret key: it must be 32 random bytes in url-safe base64 "
            "(44 characters; `polyrelay secret generate` makes one)"
        ) from None


def key_file_of(database_url: str) -> Path | None:
    """Where an SQLite database keeps its key when the variable is unset: next to the database file."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    database = Path(url.database)
    return database.with_name(database.name + ".key")


def load_secret_key(database_url: str, *, create: bool) -> SecretKey:
    """The variable if set (an empty value counts as unset), else the SQLite database's key file,
    made on first start when ``create``; PostgreSQL without the variable is refused."""
    value = os.environ.get(SECRET_KEY_ENV, "")
    if value:
        return SecretKey(parse_secret_key(value, SECRET_KEY_ENV), SECRET_KEY_ENV)
    if make_url(database_url).get_backend_name() != "sqlite":
        raise SecretKeyError(
            f"{SECRET_KEY_ENV} is not set. polyrelay encrypts upstream keys in the database with it, and "
            "every node sharing a PostgreSQL database must use the same key, so it does not make one up: "
            f"run `polyrelay secret generate` once and give its output to every node as {SECRET_KEY_ENV}"
        )
    path = key_file_of(database_url)
    if path is None:  # an in-memory database lives no longer than this process
        return SecretKey(Fernet(Fernet.generate_key()), "an in-memory key")
    if not path.exists():
        if not create:
            raise SecretKeyError(f"{SECRET_KEY_ENV} is not set and there is no key file at {path}")
        _create_key_file(path)
    return SecretKey(parse_secret_key(path.read_text(encoding="ascii"), str(path)), str(path), path)


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path`` unless another process just did: a link is atomic, so a reader never
    sees an empty or half-written file, and the first process's key is everyone's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = _write_private_file(path, generate_secret_key())
    try:
        os.link(written, path)
    except FileExistsError:
        return
    finally:
        written.unlink()
    log.warning(
        "\n%s\n%s is not set: generated a secret key that encrypts the upstream keys in the database, at\n"
        "    %s\n(permissions 0600). Without it the channels' keys cannot be read: back it up with the database.\n"
        "To keep it out of the data directory instead, set %s=\"$(cat %s)\" and delete the file.\n%s",
        "=" * 100, SECRET_KEY_ENV, path, SECRET_KEY_ENV, path, "=" * 100,
    )


def write_key_file(path: Path, key: str) -> None:
    """Replace a key file atomically, so a crash leaves the old key or the new one, never half of one."""
    os.replace(_write_private_file(path, key), path)


def _write_private_file(beside: Path, key: str) -> Path:
    """A new file next to ``beside``, readable by this user only, holding ``key``."""
    path = beside.with_name(f"{beside.name}.{os.getpid()}.tmp")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key.strip() + "\n")
        file.flush()
        os.fsync(file.fileno())
    return path


_active: SecretKey | None = None


def install(key: SecretKey) -> None:
    """Make ``key`` the one the ``channels.keys`` column encrypts and decrypts with in this process."""
    global _active
    _active = key


def active() -> SecretKey:
    if _active is None:
        raise SecretKeyError("no secret key is loaded: polyrelay.store.crypto.install() must run before channels "
                             "are read or written")
    return _active


def encrypt_keys(cipher: Fernet, keys: list[str]) -> str:
    return cipher.encrypt(orjson.dumps(keys)).decode()


def decrypt_keys(cipher: Fernet, stored: Any) -> list[str]:
    """Raises ``InvalidToken`` for another key's ciphertext (Fernet authenticates it) or a plaintext list."""
    if not isinstance(stored, str):
        raise InvalidToken
    return orjson.loads(cipher.decrypt(stored.encode()))


class EncryptedKeys(TypeDecorator[list[str]]):
    """A JSON column holding the Fernet token of a list of strings; the model sees the list."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> str | None:
        return None if value is None else encrypt_keys(active().cipher, value)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str] | None:
        if value is None:
            return None
        key = active()
        try:
            return decrypt_keys(key.cipher, value)
        except InvalidToken:
            raise SecretKeyError(f"the secret key from {key.source} does not decrypt a channel's keys") from None


class EncryptedText(TypeDecorator[str]):
    """A string column holding the Fernet token of a secret string (a user's TOTP secret); the model sees the text."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else active().cipher.encrypt(value.encode()).decode()

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        key = active()
        try:
            return key.cipher.decrypt(value.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(f"the secret key from {key.source} does not decrypt a user's TOTP secret") from None


def _decrypts(cipher: Fernet, stored: Any) -> bool:
    try:
        decrypt_keys(cipher, stored)
    except InvalidToken:
        return False
    return True


def _refuse_unless_all_decrypt(rows: list[Any], key: SecretKey) -> None:
    names = [row.name for row in rows if not _decrypts(key.cipher, row.keys)]
    if names:
        raise SecretKeyError(
            f"the secret key from {key.source} does not decrypt the upstream keys of channel(s) "
            f"{', '.join(repr(n) for n in names)}: the database was encrypted with another key. Set {SECRET_KEY_ENV} "
            "to the key it was encrypted with (after `polyrelay secret rotate`: the new key)"
        )


def check_channels(engine: Engine, key: SecretKey) -> None:
    """Refuse a key that is not the database's at start: clearer than channels that fail on every call."""
    with engine.connect() as connection:
        _refuse_unless_all_decrypt(connection.execute(_channels.select().order_by(_channels.c.id)).all(), key)


def rotate(engine: Engine, old: SecretKey, new: Fernet) -> int:
    """Re-encrypt every channel's keys and every TOTP secret from ``old`` to ``new`` in one transaction;
    the number of channels."""
    with engine.begin() as connection:
        rows = connection.execute(_channels.select().order_by(_channels.c.id).with_for_update()).all()
        _refuse_unless_all_decrypt(rows, old)
        for row in rows:
            sealed = encrypt_keys(new, decrypt_keys(old.cipher, row.keys))
            connection.execute(update(_channels).where(_channels.c.id == row.id).values(keys=sealed))
        for user_id, secret in connection.execute(_totp.select().with_for_update()).all():
            try:
                plain = old.cipher.decrypt(secret.encode())
            except InvalidToken:
                raise SecretKeyError(f"the secret key from {old.source} does not decrypt the TOTP secret of user "
                                     f"{user_id}") from None
            connection.execute(update(_totp).where(_totp.c.user_id == user_id)
                               .values(secret=new.encrypt(plain).decode()))
    return len(rows)
