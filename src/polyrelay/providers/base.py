"""The shared vocabulary of the gateway's rooms: the caller's request, and both adaptor interfaces.

A :class:`Call` is what an API family hands the relay; a sync :class:`Adaptor` turns it
into an upstream request for one :class:`Target` (channel and key) and the answer back
into the caller's format; a :class:`TaskAdaptor` polls an asynchronous family's jobs and
renders its task objects. Neither chooses channels, bills or renders errors: the relay
pipeline and the task engine do those for every protocol alike. Each adaptor declares the
request *kinds* it serves (``polyrelay.kinds``); routing never hands it anything else.
"""

from __future__ import annotations

import itertools
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import aiohttp

from polyrelay import kinds
from polyrelay.billing.meter import Usage
from polyrelay.errors import RelayError
from polyrelay.fetch import FetchPolicy
from polyrelay.multipart import Part
from polyrelay.store.snapshot import ChannelRecord


# --- the caller's request ---------------------------------------------------

@dataclass(slots=True)
class Call:
    """One caller request, built by an API family and handed to the relay pipeline."""

    family: str  # "openai", later "midjourney", "ideogram", ...
    endpoint: str  # "chat.completions", "embeddings", "audio.speech", ...
    path: str  # protocol path the adaptor targets, e.g. "/v1/chat/completions"
    model: str
    body: bytes
    content_type: str
    request_id: str
    client_ip: str = ""
    payload: dict[str, Any] | None = None  # the parsed JSON body, when the body is JSON
    stream: bool = False  # the reply is streamed to the caller as it arrives
    sse: bool = False  # ... and it is a server-sent-event stream whose usage we read
    include_usage: bool = False  # the caller itself asked for the usage chunk
    images: int = 0  # images the call asks for (estimates only; billing counts the reply)
    characters: int = 0  # input characters (text-to-speech)
    max_output_tokens: int | None = None
    parts: list[Part] | None = None  # the parts of a multipart body, with their byte spans
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = ""  # see ``polyrelay.kinds``; derived from family and endpoint when not given
    free: bool = False  # never charged and needs no price (token counting): admitted, routed and logged as any call
    # The family's error event for a stream the upstream broke after its first byte (None: the stream is cut).
    stream_error: Callable[[RelayError], bytes] | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = kinds.of_call(self.family, self.endpoint)


# A random per-process prefix plus a counter: unique across processes and restarts,
# and far cheaper than a uuid4 per request.
_REQUEST_PREFIX = secrets.token_hex(6)
_request_counter = itertools.count(1)


def new_request_id() -> str:
    return f"req_{_REQUEST_PREFIX}{next(_request_counter):010x}"


# --- synchronous adaptors -----------------------------------------------------

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

    type: str  # the channel type it serves
    kinds: frozenset[str]  # the request kinds it serves (``polyrelay.kinds``), translated or not
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

    def speaks(self, kind: str, channel: ChannelRecord) -> bool:
        """Whether ``channel`` serves ``kind`` itself; a kind it does not speak may still reach it through
        a dialect bridge (``relay.bridge``). Override where a channel option says what the upstream lacks."""
        return kind in self.kinds

    def content_type(self, response: aiohttp.ClientResponse) -> str:
        return response.headers.get("Content-Type", "application/octet-stream")

    def stream_content_type(self, call: Call, response: aiohttp.ClientResponse) -> str:
        """The content type of a streamed reply to ``call``."""
        return self.content_type(response)


# --- task adaptors ------------------------------------------------------------

# The engine's status vocabulary is midjourney-proxy's (the richest); other families map
# theirs onto it (e.g. Suno QUEUED -> SUBMITTED, Kling succeed -> SUCCESS).
NOT_START = "NOT_START"
SUBMITTED = "SUBMITTED"
MODAL = "MODAL"
IN_PROGRESS = "IN_PROGRESS"
FAILURE = "FAILURE"
SUCCESS = "SUCCESS"
CANCEL = "CANCEL"
TERMINAL = frozenset({FAILURE, SUCCESS, CANCEL})
# Callbacks and stored state never move backwards along this order.
RANK = {NOT_START: 0, SUBMITTED: 1, MODAL: 2, IN_PROGRESS: 3, FAILURE: 4, SUCCESS: 4, CANCEL: 4}


def coarse_progress(status: str) -> str:
    """A progress string for upstreams that report only a state, never a percentage."""
    return {SUCCESS: "100%", FAILURE: "", IN_PROGRESS: "50%"}.get(status, "0%")


class Media(TypedDict):
    """One result a gallery shows: ``kind`` is "image", "video" or "audio"; URLs a browser can load."""

    kind: str
    url: str
    thumbnail: str | None


def media_item(kind: str, url: Any, thumbnail: Any = None) -> list[Media]:
    """``[item]`` when ``url`` is a non-empty string, else ``[]``: upstream results are loosely typed."""
    if not isinstance(url, str) or not url:
        return []
    return [Media(kind=kind, url=url, thumbnail=thumbnail if isinstance(thumbnail, str) and thumbnail else None)]


@dataclass(slots=True)
class TaskView:
    """A task row as plain data, safe to pass between the DB thread and the event loop."""

    id: str
    token_id: int | None
    token_name: str
    family: str
    action: str
    model: str
    mode: str
    parent_id: str | None
    channel_id: int
    upstream_id: str
    status: str
    progress: str
    request: dict[str, Any]
    result: dict[str, Any]
    fail_reason: str
    cost_micros: int
    settlement: str
    submit_time: int
    start_time: int | None
    finish_time: int | None
    next_poll_at: int | None
    poll_count: int
    notify_hook: str
    properties: dict[str, Any] = field(default_factory=dict)
    notify_due_at: int | None = None  # set while a callback is undelivered (tasks/callbacks.py)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(slots=True)
class TaskUpdate:
    """What the upstream says about one task now."""

    status: str
    progress: str = ""
    result: dict[str, Any] | None = None  # the upstream's task object, kept for rendering
    fail_reason: str = ""
    start_time: int | None = None
    finish_time: int | None = None


class TaskAdaptor(ABC):
    """One task family's upstream protocol, as far as the engine needs it."""

    family: str
    channel_type: str  # channels of this type run the family's jobs
    kinds: frozenset[str]  # the request kinds it serves (``polyrelay.kinds``)
    batch_size: int = 100  # most upstream ids per status query
    # JSON keys of a finished task's ``result`` whose URLs ``files.rehost`` may replace by polyrelay's own.
    result_url_keys: frozenset[str] = frozenset()

    @abstractmethod
    async def fetch(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_ids: list[str]
    ) -> dict[str, TaskUpdate]:
        """Current state of ``upstream_ids``; ids the upstream does not know are left out.

        Raise (aiohttp.ClientError, asyncio.TimeoutError, ValueError) when the upstream
        cannot answer: the engine retries later.
        """

    @abstractmethod
    def render(self, task: TaskView) -> dict[str, Any]:
        """The caller-facing task object (fetch replies and notifyHook bodies)."""

    def scope(self, task: TaskView) -> str:
        """Tasks polled in one ``fetch`` share this value; an upstream whose status query differs by task
        kind (Kling: ``/v1/videos/text2video/{id}`` vs ``/v1/images/generations/{id}``) returns the kind,
        and its ``fetch`` then receives it as the keyword argument ``scope``. Default: one scope."""
        return ""

    def prompt(self, task: TaskView) -> str:
        """The prompt the caller submitted, "" if none (the console shows it next to the results)."""
        prompt = (task.request or {}).get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def media(self, task: TaskView) -> list[Media]:
        """The task's results for the console's gallery; families with viewable results override this."""
        return []

    def buttons(self, task: TaskView) -> list[dict[str, str]]:
        """Follow-up actions offered on the result (``customId``, ``label``, ``emoji``); only Midjourney has them."""
        return []


class OneByOne(TaskAdaptor):
    """For upstreams whose status query answers one task at a time (BFL, Luma, Kling, Stability): the poller
    spreads the queries over the channel's ``channel_concurrency`` slots; the family maps one answer."""

    batch_size = 1

    async def fetch(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_ids: list[str],
        **scope: Any,
    ) -> dict[str, TaskUpdate]:
        updates: dict[str, TaskUpdate] = {}
        for upstream_id in upstream_ids:
            update = await self.fetch_one(session, channel, key, upstream_id, **scope)
            if update is not None:
                updates[upstream_id] = update
        return updates

    @abstractmethod
    async def fetch_one(
        self, session: aiohttp.ClientSession, channel: ChannelRecord, key: str, upstream_id: str, **scope: Any
    ) -> TaskUpdate | None:
        """The task's state now; None when the upstream does not know it (yet). Raise to retry later."""
