"""The hot path of one relayed request, for every synchronous API family.

admission (allow-list, channels of the call's kind, group, price rule, rate limit,
reservation; the key and IP fence were checked before the body was read) -> channels in
order -> adaptor call with failover before the first byte -> settlement and usage row,
exactly once whatever happened. Nothing here queries the database: records come from the
snapshot, money from this node's budget leases, writes go to the batch writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from polyrelay.billing.budget import Budgets
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.errors import RelayError
from polyrelay.fetch import FetchPolicy
from polyrelay.providers.base import Adaptor, Call, Reply, ReplyStream, Services, Target
from polyrelay.relay import failover, stored
from polyrelay.relay.bridge import adaptor_for, narrowed
from polyrelay.relay.admission import admit, call_cost, no_cost, rate_limit
from polyrelay.relay.routing import Health, candidates, target_for
from polyrelay.relay.settlement import CLIENT_GONE, Outcome, Settler, note_attempt
from polyrelay.relay.upstream import Timeouts, UpstreamClient, UpstreamResponse
from polyrelay.store.files import FileStore
from polyrelay.store.snapshot import Snapshot, TokenRecord
from polyrelay.store.writer import BatchWriter
from polyrelay.telemetry import tracing

log = logging.getLogger("polyrelay")


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
        *,
        budgets: Budgets,
    ) -> None:
        self.snapshot = snapshot
        self.limiter = limiter or RateLimiter()
        self.budgets = budgets
        self.settler = Settler(writer, self.limiter)
        self.health = health
        self.files = files  # set when the operator re-hosts provider results
        self._session = session
        self._upstream = upstream
        self._services = Services(session, fetch_policy or FetchPolicy())
        self._output_estimate_tokens = output_estimate_tokens

    async def handle(self, call: Call, token: TokenRecord) -> Response:
        """Relay ``call`` for ``token`` (authenticated by ``admission.caller`` before the body was read)."""
        outcome = Outcome(call.request_id, call.family, call.endpoint, call.model, call.client_ip, call.stream,
                          token=token, fixed_cost=0 if call.free else None)
        try:
            with self.settler.guard(outcome):
                cost = no_cost if call.free else call_cost(call, self._output_estimate_tokens)
                groups = narrowed(await admit(self.snapshot, self.limiter, self.budgets, outcome, call.kind, cost,
                                              price_required=not call.free), call)
                tried = await failover.first_answer(
                    call.model, (target_for(channel, call.model) for channel in candidates(groups)),
                    lambda target: self._attempt(call, target), self.health, on_attempt=note_attempt(outcome),
                    trace=outcome.trace)
                target, answer = tried.target, tried.answer
                if not isinstance(answer, Reply):
                    return self._streamed(call, target, answer, outcome)
                if self.files is not None:
                    answer = await self._rehosted(call, target, answer, self.files)
        except RelayError as error:
            error.headers = {**error.headers, "x-request-id": call.request_id}  # refusals are logged too
            raise
        outcome.status, outcome.usage = answer.status, answer.usage
        outcome.error = call.extra.get("failed_jobs", "")
        self.settler.finish(outcome)
        headers = {"x-request-id": call.request_id, **answer.headers, "content-type": answer.content_type}
        return Response(answer.body, status_code=answer.status, headers=headers)

    async def handle_stored(self, call: Call, token: TokenRecord, what: str) -> Response:
        """Relay a call about an object an upstream stored (``what``, e.g. "the response resp_1"): no model,
        so routed to the caller's native channels by ``relay.stored``; free, so only rate-limited."""
        await rate_limit(self.limiter, token)

        async def attempt(target: Target) -> Reply:
            answer = await self._attempt(call, target)
            assert isinstance(answer, Reply), "stored-object calls are not streamed"
            return answer

        try:
            reply = await stored.first_holder(stored.holders(self.snapshot, token, call.kind), attempt, self.health,
                                              what)
        except RelayError as error:
            error.headers = {**error.headers, "x-request-id": call.request_id}
            raise
        return Response(reply.body, status_code=reply.status,
                        headers={"x-request-id": call.request_id, "content-type": reply.content_type})

    def _streamed(self, call: Call, target: Target, answer: UpstreamResponse, outcome: Outcome) -> Response:
        adaptor = adaptor_for(target.channel, call.kind)
        headers = {"x-request-id": call.request_id, "content-type": adaptor.stream_content_type(call, answer)}
        if call.sse:
            headers["cache-control"] = "no-cache"
            headers["x-accel-buffering"] = "no"  # ask reverse proxies not to buffer the stream
        outcome.status = answer.status
        try:
            replay = adaptor.stream_reply(call, answer)
        except BaseException:
            answer.close()
            raise

        def close() -> None:
            if outcome.settled:
                return
            if not outcome.drained and not outcome.error:
                outcome.status, outcome.error = CLIENT_GONE, "client disconnected; billed for what was produced"
            answer.close()  # cancels the upstream call if the caller went away
            try:
                outcome.usage = replay.usage()
            finally:
                self.settler.finish(outcome)

        return _RelayedStream(self._stream(call, replay, outcome, close), close, status_code=answer.status,
                              headers=headers)

    async def _rehosted(self, call: Call, target: Target, reply: Reply, files: FileStore) -> Reply:
        """The reply with its result URLs moved to polyrelay's file store (see ``store.files``).

        After the upstream succeeded, so it never fails the call: a URL that cannot be
        re-hosted is kept as the provider gave it.
        """
        keys = adaptor_for(target.channel, call.kind).result_url_keys
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

    async def _attempt(self, call: Call, target: Target) -> Reply | UpstreamResponse:
        adaptor = adaptor_for(target.channel, call.kind)
        await adaptor.prepare(call, target, self._services)
        jobs = adaptor.jobs(call)
        if jobs == 1:
            return await self._request(call, target, adaptor)
        return await self._request_jobs(call, target, adaptor, jobs)

    async def _request(self, call: Call, target: Target, adaptor: Adaptor) -> Reply | UpstreamResponse:
        """One request on one channel and key: its answer, a ``RelayError`` another channel would not
        change, or ``ChannelFailed`` when the next channel should be tried."""
        channel = target.channel
        request = adaptor.build_request(call, target)
        if tracing.active is not None:  # all that tracing costs a request when it is off
            tracing.active.inject(request.headers)
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
                if failover.fails_over(response.status) and not error.final:
                    raise failover.status_failed(response.status, error)
                raise error
            if call.stream:
                return response
            try:
                reply = await adaptor.read_reply(call, response)
            except ValueError as exc:  # not JSON, or not what the protocol promises: nothing reached the caller yet
                raise failover.ChannelFailed(RelayError(
                    502, f"The upstream answered with a body polyrelay could not read: {exc}",
                    type="upstream_error", code="bad_upstream_response")) from None
            finally:
                response.release()
            return await adaptor.follow_up(call, target, reply, self._session)
        except failover.TRANSPORT_ERRORS as exc:
            raise failover.transport_failed(exc) from None

    async def _request_jobs(self, call: Call, target: Target, adaptor: Adaptor, jobs: int) -> Reply:
        """``jobs`` requests on one channel at once (see ``Adaptor.jobs``), answered with every image
        that came back. Only when none did is it an error: an upstream's verdict on a job first, else
        the channel's failure, so the next channel is tried."""
        results = await asyncio.gather(*(self._request(call, target, adaptor) for _ in range(jobs)),
                                       return_exceptions=True)
        replies = [result for result in results if isinstance(result, Reply)]
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, (RelayError, failover.ChannelFailed)):
                raise failure  # a bug, not an upstream's answer
        if not replies:
            raise next((failure for failure in failures if isinstance(failure, RelayError)), failures[0])
        merged = adaptor.merged(call, replies)
        if failures:
            call.extra["failed_jobs"] = f"{len(failures)} of {jobs} jobs failed, first: {failures[0]}"
        return merged

    async def _stream(
        self, call: Call, replay: ReplyStream, outcome: Outcome, close: Callable[[], None]
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in replay:
                if outcome.ttfb is None:
                    outcome.ttfb = time.perf_counter() - outcome.started
                yield chunk
        except Exception as exc:
            # Bytes already reached the caller, so there is no failover: end the stream with an error
            # the caller's SDK raises (a cut answer must not look whole), bill what was produced, log why.
            outcome.error = f"upstream stream broke: {type(exc).__name__}"
            if isinstance(exc, failover.TRANSPORT_ERRORS):
                log.warning("request %s: the upstream stream broke (%s)", call.request_id, type(exc).__name__)
            else:
                log.exception("request %s: relaying the stream failed", call.request_id)
            if call.stream_error is not None:
                yield call.stream_error(RelayError(
                    502, "The upstream connection broke before the answer was complete; this answer is cut short.",
                    type="upstream_error", code="stream_interrupted"))
        else:
            outcome.drained = True
        finally:
            close()


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
