"""One error type the whole gateway raises; each API family renders it in its own dialect."""

from __future__ import annotations

from polyrelay.scrub import scrub, scrub_bytes


class RelayError(Exception):
    """A failure with the HTTP status and OpenAI-style ``type``/``code`` a caller should see.

    ``type`` and ``code`` follow OpenAI's vocabulary because it is the richest one we
    serve; other families map them onto their own fields.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        # The upstream's own error body, kept so a family speaking that same protocol can
        # relay it verbatim (see ``relayed``); other families render ``message`` instead.
        self.raw_protocol: str | None = None
        self.raw_body: bytes = b""
        self.raw_content_type: str = "application/json"
        self.raw_status: int | None = None  # the HTTP status to relay the raw body with; None: ``status``
        # Set by an adaptor when an upstream status that usually means "this channel cannot serve"
        # (e.g. Stability's 403 content_moderation) is really about the request: no failover.
        self.final = False

    def with_raw(
        self, protocol: str, body: bytes, content_type: str = "application/json", status: int | None = None
    ) -> "RelayError":
        """Attach the upstream's error body, as received from a ``protocol`` upstream; ``status`` when the
        protocol answers refusals with another HTTP status than the one logged (midjourney-proxy's 200)."""
        self.raw_protocol, self.raw_body, self.raw_content_type = protocol, body, content_type
        self.raw_status = status
        return self

    def relayed(self, protocol: str) -> bytes | None:
        """The upstream body when it came from ``protocol`` (so it is in the caller's dialect)."""
        return self.raw_body if self.raw_protocol == protocol and self.raw_body else None

    def scrub(self, keys: tuple[str, ...]) -> "RelayError":
        """Never show anyone our upstream keys, neither in the message nor in a relayed body."""
        self.message = scrub(self.message, keys)
        self.raw_body = scrub_bytes(self.raw_body, keys)
        return self

    def __repr__(self) -> str:
        return f"RelayError({self.status}, {self.message!r}, code={self.code!r})"


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> RelayError:
    return RelayError(400, message, param=param, code=code)
