"""The one small interface every upstream protocol implements.

An adaptor turns a :class:`Call` into an upstream HTTP request for one channel and
key, and turns the upstream's answer back into the caller's format, reporting usage.
It never chooses channels, never bills and never renders errors: the relay pipeline
does those for every protocol alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.relay.call import Call
from polyrelay.relay.fetch import FetchPolicy
from polyrelay.store.snapshot import ChannelRecord


@dataclass(slots=True)
class Target:
    """Where one attempt goes: a channel, one of its keys, and the model name upstream."""

    channel: ChannelRecord
    key_index: int
    key: str
    upstream_model: str


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | list[bytes | memoryview] | None = None  # a list: buffers sent one after the other, never joined


@dataclass(slots=True)
class Reply:
    """A complete answer, already in the caller's format."""

    status: int
    body: bytes
    content_type: str
    usage: Usage | None
    headers: dict[str, str] = field(default_factory=dict)


class ReplyStream(ABC):
    """A streamed answer: iterate it for the caller's bytes, then ask for the usage."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    def usage(self) -> Usage | None:
        """What was produced so far; callable after the stream ended or was cut off."""


@dataclass(frozen=True, slots=True)
class Services:
    """Process-wide resources an adaptor may use while preparing a request."""

    session: aiohttp.ClientSession
    fetch_policy: FetchPolicy = FetchPolicy()  # for caller-given URLs (images to inline)


class Adaptor(ABC):
    """One upstream protocol. Subclasses register themselves under ``type``."""

    type: str
    # JSON keys whose values are result URLs that ``files.rehost`` may replace by polyrelay's own.
    result_url_keys: frozenset[str] = frozenset()

    async def prepare(self, call: Call, target: Target, services: Services) -> None:
        """Asynchronous work ``build_request`` needs done first (fetching images to inline).

        Called before each attempt; results belong in ``call.extra`` so a failover reuses
        them. The default does nothing.
        """

    @abstractmethod
    def build_request(self, call: Call, target: Target) -> UpstreamRequest: ...

    @abstractmethod
    async def read_reply(self, call: Call, response: aiohttp.ClientResponse) -> Reply:
        """Read a successful (2xx) non-streamed answer."""

    @abstractmethod
    def stream_reply(self, call: Call, response: aiohttp.ClientResponse) -> ReplyStream:
        """Wrap a successful (2xx) streamed answer."""

    @abstractmethod
    def upstream_error(self, call: Call, status: int, body: bytes) -> RelayError:
        """Describe a non-2xx upstream answer; the message must not leak credentials."""

    def jobs(self, call: Call) -> int:
        """Upstream requests the call takes: more than 1 only where the upstream makes one image per
        request and the caller asked for ``n``. The pipeline runs them concurrently on one channel
        and joins the replies with ``merged``. Default: 1.
        """
        return 1

    def merged(self, call: Call, replies: list[Reply]) -> Reply:
        """One reply from the successful replies of a call's jobs; only called when ``jobs`` > 1."""
        raise NotImplementedError(f"the {self.type} adaptor makes one upstream request per call")

    async def follow_up(
        self, call: Call, target: Target, reply: Reply, session: aiohttp.ClientSession
    ) -> Reply:
        """Turn a first answer that is only a receipt (submit-then-poll protocols) into the result.

        Runs on the pipeline's pooled ``session`` with the same ``target``. A failure here must
        raise :class:`RelayError` (not a connection error): the upstream accepted the job, so
        the pipeline must not fail over and submit it twice. Default: the reply is final.
        """
        return reply

    def content_type(self, response: aiohttp.ClientResponse) -> str:
        return response.headers.get("Content-Type", "application/octet-stream")
