"""The settings type of an address polyrelay builds links from (public_url, provider endpoints)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")  # links are built as f"{base}/path"


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An absolute http(s) URL, stored without a trailing slash."""
