"""The hot path of one request, for every API family.

authenticate -> allow-list -> price and reservation -> channels in order -> adaptor
call with failover before the first byte -> settlement -> usage log. Nothing here
queries the database: records come from the snapshot, writes go to the batch writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from polyrelay.billing.meter import Price, Usage
from polyrelay.billing.quota import Reservation, charge, estimate, require_price, reserve
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.errors import RelayError
from polyrelay.providers import adaptor_for
from polyrelay.providers.base import Adaptor, Reply, ReplyStream, Services, Target
from polyrelay.relay.auth import authenticate, check_client_ip, check_model_allowed, key_hint
from polyrelay.relay.call import Call
from polyrelay.relay.fetch import FetchPolicy
from polyrelay.relay.routing import Health, candidates, target_for
from polyrelay.relay.upstream import Timeouts, UpstreamClient, UpstreamResponse
from polyrelay.store.files import FileStore
from polyrelay.store.snapshot import Snapshot, TokenRecord
from polyrelay.store.writer import BatchWriter

log = logging.getLogger("polyrelay")

# Statuses that say "this channel or key cannot serve now", so another channel may.
_FAILOVER_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
_KEY_STATUSES = frozenset({401, 403, 429})  # the key itself is the problem: rest it
_CLIENT_GONE = 499


@dataclass(slots=True)
class Outcome:
    """What happened to one request, for settlement and its usage-log row."""

    token: TokenRecord | None = None
    price: Price | None = None
    reservation: Reservation | None = None
    target: Target | None = None
    attempts: int = 0
    status: int = 0
    usage: Usage | None = None
    error: str = ""
    ttfb: float | None = None
    drained: bool = False  # a streamed reply was read to its end
    channels: frozenset[str] | None = None  # the only channels the caller's group may use
    closed: bool = False  # a streamed reply was settled and logged


class Relay:
    def __init__(
        self,
        snapshot: Snapshot,
        session: aiohttp.ClientSession,
        upstream: UpstreamClient,
        writer: BatchWriter,
        health: Health,
        output_estimate_tokens: int,
        fetch_policy: FetchPolicy | None = None,
        limiter: RateLimiter | None = None,
        files: FileStore | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.limiter = limiter or RateLimiter()
        self._session = session
        self._upstream = upstream
        self._services = Services(session, fetch_policy or FetchPolicy())
        self._writer = writer
        self._health = health
        self._output_estimate_tokens = output_estimate_tokens
        self._files = files  # set when the operator re-hosts provider results

    @property
    def writer(self) -> BatchWriter:
        """The usage-log writer, for API families that log outside ``handle`` (task submits)."""
        return self._writer

    @property
    def health(self) -> Health:
        """Channel health, for API families that call upstreams themselves (task submits)."""
        return self._health

    @property
    def files(self) -> FileStore | None:
        """The store results are re-hosted in, when the operator turned that on (task results too)."""
        return self._files

    async def handle(self, call: Call, key: str | None) -> Response:
        started = time.perf_counter()
        outcome = Outcome()
        try:
            self._admit(call, key, outcome)
            target, answer = await self._call_upstream(call, outcome)
            if self._files is not None and isinstance(answer, Reply):
                answer = await self._rehosted(target, answer, self._files)
        except RelayError as error:
            outcome.status, outcome.error = error.status, error.message
            self._finish(call, outcome, started)
            error.headers = {**error.headers, "x-request-id": call.request_id}  # refusals are logged too
            raise
        headers = {"x-request-id": call.request_id}
        if isinstance(answer, Reply):
            outcome.status, outcome.usage = answer.status, answer.usage
            self._finish(call, outcome, started)
            headers.update(answer.headers)
            headers["content-type"] = answer.content_type
            return Response(answer.body, status_code=answer.status, headers=headers)
        headers["content-type"] = adaptor_for(target.channel.type).content_type(answer)
        if call.sse:
            headers["cache-control"] = "no-cache"
            headers["x-accel-buffering"] = "no"  # ask reverse proxies not to buffer the stream
        replay = adaptor_for(target.channel.type).stream_reply(call, answer)
        outcome.status = answer.status

        def close() -> None:
            if not outcome.closed:
                outcome.closed = True
                if not outcome.drained and not outcome.error:
                    outcome.status, outcome.error = _CLIENT_GONE, "client disconnected; billed for what was produced"
                answer.close()  # cancels the upstream call if the caller went away
                outcome.usage = replay.usage()
                self._finish(call, outcome, started)

        return _RelayedStream(
            self._stream(replay, outcome, started, close), close, status_code=answer.status, headers=headers
        )

    async def _rehosted(self, target: Target, reply: Reply, files: FileStore) -> Reply:
        """The reply with its result URLs moved to polyrelay's file store (see ``store.files``).

        After the upstream succeeded, so it never fails the call: a URL that cannot be
        re-hosted is kept as the provider gave it.
        """
        keys = adaptor_for(target.channel.type).result_url_keys
        if not keys or reply.status >= 300 or "json" not in reply.content_type:
            return reply
        try:
            body = await files.rehost_json(reply.body, keys, target.channel, self._session)
        except Exception:  # a bug must not turn a paid-for result into an error
            log.exception("re-hosting a reply of channel %r failed; its URLs are kept", target.channel.name)
            return reply
        if body is reply.body:
            return reply
        return Reply(reply.status, body, reply.content_type, reply.usage, reply.headers)

    def _admit(self, call: Call, key: str | None, outcome: Outcome) -> None:
        snapshot = self.snapshot
        outcome.token = token = authenticate(snapshot, key)
        if token.allowed_ips is not None:
            check_client_ip(token, call.client_ip)
        check_model_allowed(token, call.model)
        routes = snapshot.routes(call.model)
        if routes and token.user is not None and token.user.channels is not None:
            allowed = token.user.channels  # the user's group may use only these channels
            routes = [[c for c in group if c.name in allowed] for group in routes]
            routes = [group for group in routes if group]
            outcome.channels = allowed
        if not routes:
            raise RelayError(
                404,
                f"The model '{call.model}' does not exist or no channel serves it.",
                code="model_not_found",
                param="model",
            )
        outcome.price = price = snapshot.price_for(call.model)
        require_price(token, call.model, price)
        self.limiter.admit(token)
        outcome.reservation = reserve(token, charge(token, estimate(call, price, self._output_estimate_tokens)))

    async def _call_upstream(self, call: Call, outcome: Outcome) -> tuple[Target, Reply | UpstreamResponse]:
        """Try channels in order until one answers; never after a byte reached the caller."""
        last: RelayError | None = None
        for channel in candidates(self.snapshot, call.model):
            if outcome.channels is not None and channel.name not in outcome.channels:
                continue  # not a channel of the caller's group
            outcome.target = target = target_for(channel, call.model)
            outcome.attempts += 1
            adaptor = adaptor_for(channel.type)
            await adaptor.prepare(call, target, self._services)
            jobs = adaptor.jobs(call)
            try:
                if jobs == 1:
                    return target, await self._attempt(call, target, adaptor)
                return target, await self._attempt_jobs(call, target, adaptor, jobs, outcome)
            except _ChannelFailed as failed:
                last = failed.error
        raise _final_error(call.model, last)

    async def _attempt(self, call: Call, target: Target, adaptor: Adaptor) -> Reply | UpstreamResponse:
        """One request on one channel. Raises ``RelayError`` for an answer another channel would not
        change, ``_ChannelFailed`` when the next channel should be tried."""
        channel = target.channel
        request = adaptor.build_request(call, target)
        timeouts = Timeouts(
            connect=channel.connect_timeout_s,
            total=None if call.stream else channel.timeout_s,
            read=channel.timeout_s,
        )
        try:
            response = await self._upstream.request(
                request.method, request.url, request.headers, request.body, timeouts
            )
            if response.status >= 400:
                body = await response.read()
                response.release()
                error = adaptor.upstream_error(call, response.status, body)
                error.redact(target.key, key_hint(target.key))
                if response.status not in _FAILOVER_STATUSES or error.final:
                    self._health.succeeded(channel)  # the request was at fault, not the channel
                    raise error
                self._health.failed(target, error.message, rest_key=response.status in _KEY_STATUSES)
                raise _ChannelFailed(error)
            if call.stream:
                self._health.succeeded(channel)
                return response
            try:
                reply = await adaptor.read_reply(call, response)
            finally:
                response.release()
            reply = await adaptor.follow_up(call, target, reply, self._session)
            self._health.succeeded(channel)
            return reply
        except asyncio.TimeoutError:
            error = RelayError(504, f"Channel '{channel.name}' timed out.", type="upstream_error", code="timeout")
        except aiohttp.ClientError as exc:
            error = RelayError(
                502, f"Channel '{channel.name}' is unreachable ({type(exc).__name__}).", type="upstream_error"
            )
        self._health.failed(target, error.message, rest_key=False)
        raise _ChannelFailed(error)

    async def _attempt_jobs(self, call: Call, target: Target, adaptor: Adaptor, jobs: int, outcome: Outcome) -> Reply:
        """``jobs`` requests on one channel at once (see ``Adaptor.jobs``), answered with every image
        that came back. Only when none did is it an error: an upstream's verdict on a job first, else
        the channel's failure, so the next channel is tried."""
        results = await asyncio.gather(*(self._attempt(call, target, adaptor) for _ in range(jobs)),
                                       return_exceptions=True)
        replies = [result for result in results if isinstance(result, Reply)]
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, (RelayError, _ChannelFailed)):
                raise failure  # a bug, not an upstream's answer
        if not replies:
            raise next((failure for failure in failures if isinstance(failure, RelayError)), failures[0])
        if failures:
            outcome.error = f"{len(failures)} of {jobs} jobs failed, first: {failures[0]}"
        return adaptor.merged(call, replies)

    async def _stream(
        self, replay: ReplyStream, outcome: Outcome, started: float, close: Callable[[], None]
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in replay:
                if outcome.ttfb is None:
                    outcome.ttfb = time.perf_counter() - started
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # Bytes already reached the caller, so there is no failover: end the stream, log why.
            outcome.error = f"upstream stream broke: {type(exc).__name__}"
        else:
            outcome.drained = True
        finally:
            close()

    def _finish(self, call: Call, outcome: Outcome, started: float) -> None:
        """Settle the reservation and queue the usage-log row."""
        served = outcome.target is not None and (outcome.status < 400 or outcome.status == _CLIENT_GONE)
        usage = (outcome.usage or Usage(source="request")) if served else Usage(source="")
        token, target = outcome.token, outcome.target
        cost = charge(token, outcome.price.cost(usage)) if served and outcome.price is not None else 0  # type: ignore[arg-type]
        if outcome.reservation is not None:
            outcome.reservation.settle(cost)
            self.limiter.used(token, usage)  # type: ignore[arg-type]
        ttfb = outcome.ttfb if outcome.ttfb is not None else (time.perf_counter() - started)
        self._writer.record_usage(
            {
                "request_id": call.request_id,
                "created_at": datetime.now(timezone.utc),
                "token_id": token.id if token else None,
                "token_name": token.name if token else "",
                "channel_id": target.channel.id if target else None,
                "channel_name": target.channel.name if target else "",
                "family": call.family,
                "endpoint": call.endpoint,
                "model": call.model,
                "upstream_model": target.upstream_model if target else "",
                "stream": call.stream,
                "status_code": outcome.status,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "images": usage.images,
                "seconds": usage.seconds,
                "characters": usage.characters,
                "usage_source": usage.source,
                "cost_micros": cost,
                "price_set": outcome.price is not None,
                "attempts": outcome.attempts,
                "latency_ms": (time.perf_counter() - started) * 1000,
                "ttfb_ms": ttfb * 1000,
                "error": outcome.error[:2000],
                "client_ip": call.client_ip,
                "user_id": token.user.id if token is not None and token.user is not None else None,
            },
            token.id if token else None,
            cost,
            outcome.reservation,
        )


class _RelayedStream(StreamingResponse):
    """Streams the reply, stops when the caller leaves, and always settles.

    Starlette's own streaming response watches for a disconnect through an anyio task
    group, which costs more CPU per stream than all of polyrelay's own work; here one
    plain task waits for ``http.disconnect`` and cancels the sender. Whatever ends the
    stream, the body generator is closed and ``on_close`` settles and logs the request,
    even if the caller left before the first chunk.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        caller_left = False

        async def watch() -> None:
            nonlocal caller_left
            while (await receive())["type"] != "http.disconnect":
                pass
            caller_left = True
            sender.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not caller_left:
                raise
            sender.uncancel()  # our own cancellation: the caller is gone, nothing to propagate
        finally:
            watcher.cancel()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            self._on_close()


class _ChannelFailed(Exception):
    """This channel cannot serve now (unreachable, timed out, or a failover status): try the next."""

    def __init__(self, error: RelayError) -> None:
        super().__init__(error.message)
        self.error = error


def _final_error(model: str, last: RelayError | None) -> RelayError:
    if last is None:
        return RelayError(
            503, f"No channel is available for the model '{model}'.", type="upstream_error", code="no_channel"
        )
    if last.status in (401, 403):
        # The caller's key is fine; ours were refused. Don't make the SDK blame the caller.
        return RelayError(
            502,
            f"Every channel for the model '{model}' refused polyrelay's credentials: {last.message}",
            type="upstream_error",
            code="upstream_auth_failed",
        )
    return last
