"""What every relaying API family shares: the caller's key, the bounded body, the Call, the endpoint wrapper.

One place builds a :class:`Call` (fresh request id, caller IP) and one wrapper runs
read → parse → relay, so the families differ only in how they parse and render errors.
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from polyrelay import multipart
from polyrelay.api.uploads import is_multipart
from polyrelay.errors import RelayError, bad_request
from polyrelay.multipart import Part
from polyrelay.providers.base import Call, new_request_id
from polyrelay.relay.admission import caller
from polyrelay.relay.pipeline import Relay

_WATCH_AFTER_S = 0.05  # answers slower than this are watched for a caller who leaves
# Multipart bodies larger than this are parsed on a worker thread. Measured (uvloop): the hop costs
# ~0.05 ms (p99 ~0.6 ms), a 1 MB body ~0.3-0.6 ms to parse and a 25 MB one ~8 ms, so smaller bodies
# stay on the loop, where the parse is cheaper than the hop.
_THREAD_AFTER_BYTES = 1024 * 1024

Parse = Callable[[Request, bytes], Call]
Render = Callable[[RelayError], Response]
KeyOf = Callable[[Request], "str | None"]


def bearer_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.partition(" ")
        return key.strip() if scheme.lower() == "bearer" else authorization.strip()
    return request.headers.get("api-key")  # Azure-style clients


async def read_body(request: Request) -> bytes:
    """The whole body, refusing early (413) when it is larger than the operator allows; a multipart
    body is parsed here too (see ``form_parts``), so its limits hold before any family looks at it.

    Gathered in a ``BytesIO``, whose ``getvalue`` hands over its buffer instead of copying it:
    an upload is held once, not once in chunks and again joined.
    """
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = io.BytesIO()
    async for chunk in request.stream():
        if body.tell() + len(chunk) > limit:
            raise _too_large(limit)
        body.write(chunk)
    data = body.getvalue()
    if is_multipart(request):
        request.state.parts = await _parse_parts(request, data)
    return data


async def _parse_parts(request: Request, body: bytes) -> list[Part]:
    """The parts, within the operator's limits; a big body on a worker thread, so the loop keeps serving."""
    settings = request.app.state.settings
    parse = functools.partial(multipart.parse_parts, body, request.headers.get("content-type", ""),
                              max_parts=settings.max_multipart_parts,
                              max_field_bytes=settings.max_multipart_field_bytes)
    return await asyncio.to_thread(parse) if len(body) > _THREAD_AFTER_BYTES else parse()


def form_parts(request: Request) -> list[Part]:
    """The multipart body's parts, as ``read_body`` parsed them; 400 for a body of another type."""
    parts: list[Part] | None = getattr(request.state, "parts", None)
    if parts is None:
        raise bad_request(multipart.NOT_MULTIPART)
    return parts


def _too_large(limit: int) -> RelayError:
    return RelayError(413, f"Request body is larger than the {limit} bytes this gateway accepts.", code="request_too_large")


def client_ip(request: Request) -> str:
    """The caller's address as logged and fenced, "" when the server does not know it. Behind a
    trusted proxy it is the forwarded client's (``polyrelay.proxies`` rewrote the scope)."""
    return request.client.host if request.client else ""


def json_body(body: bytes, not_json: str) -> dict[str, Any]:
    """The body as a JSON object; ``not_json`` opens the 400 for a body that is not JSON, worded as the family words it."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"{not_json}: {exc}.") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


def new_call(request: Request, family: str, endpoint: str, path: str, model: str, body: bytes, *,
             content_type: str | None = None, **fields: Any) -> Call:
    """A Call for this request; the content type defaults to the caller's (else JSON)."""
    return Call(
        family=family,
        endpoint=endpoint,
        path=path,
        model=model,
        body=body,
        content_type=content_type if content_type is not None else request.headers.get("content-type", "application/json"),
        request_id=new_request_id(),
        client_ip=client_ip(request),
        **fields,
    )


def relay_endpoint(parse: Parse, render: Render, key: KeyOf = bearer_key) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, then read, parse, relay; any RelayError (ours or the upstream's) rendered in the
    family's dialect. The key and IP fence are checked before a byte of the body is read."""

    async def endpoint(request: Request) -> Response:
        try:
            relay: Relay = request.app.state.relay
            token = caller(relay.snapshot, key(request), client_ip(request))
            body = await read_body(request)
            call = parse(request, body)
            return await _unless_caller_leaves(request, relay.handle(call, token))
        except RelayError as error:
            return render(error)

    return endpoint


async def _unless_caller_leaves(request: Request, answer: Awaitable[Response]) -> Response:
    """``answer``, cancelled when the caller disconnects first (settled as 499, the upstream call dropped).

    The body has been read, so the next ASGI message is the disconnect. Watching costs a task,
    so it starts only once the answer has taken ``_WATCH_AFTER_S``: most answers come sooner,
    and a caller who leaves a quick one is settled when it arrives. A streamed reply watches
    for the disconnect itself once it starts (``relay.pipeline._RelayedStream``).
    """
    handler = asyncio.current_task()
    assert handler is not None
    loop = asyncio.get_running_loop()
    left = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        handler.cancel()

    def start() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(_WATCH_AFTER_S, start)
    try:
        return await answer
    except asyncio.CancelledError:
        if not left:
            raise
        handler.uncancel()
        return Response(status_code=499)  # nobody reads it: the caller is gone
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
