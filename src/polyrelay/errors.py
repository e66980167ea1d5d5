"""One error type the whole gateway raises; each API family renders it in its own dialect."""

from __future__ import annotations


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

    def __repr__(self) -> str:
        return f"RelayError({self.status}, {self.message!r}, code={self.code!r})"


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> RelayError:
    return RelayError(400, message, param=param, code=code)
