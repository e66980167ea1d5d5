"""Caller keys: how they are made, stored (hashed) and shown (a hint); no layer of its own."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-pr-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a fast unsalted hash cannot be brute-forced;
    # it lets the hot path find a key with one dict lookup.
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """What an operator may see of a key: enough to tell keys apart, useless to an attacker."""
    return f"{key[:6]}...{key[-4:]}" if len(key) > 12 else "***"
