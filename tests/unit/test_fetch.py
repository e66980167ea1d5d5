"""The one safe outbound request: which addresses count as public, pinning against DNS rebinding,
redirects, and callbacks delivered through it.

The network is a real aiohttp server on a Unix socket, reached through a ``UnixConnector``
the test controls, so a request aimed at any address lands on it; a trace records the URL
aiohttp was told to connect to. The DNS is the policy's ``resolve`` hook, scripted per test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from polyrelay.fetch import FetchError, FetchPolicy, Refused, check_public_url, is_public, pinned_request
from polyrelay.tasks.notify import Notifier
from polyrelay.tasks.settings import TaskSettings

PUBLIC = "93.184.215.14"  # a globally routable address; the Unix socket stands in for it
RECEIVED = web.AppKey("received", list[SimpleNamespace])


@pytest.mark.parametrize("address", [
    "::ffff:127.0.0.1", "::ffff:10.0.0.1",  # IPv4-mapped
    "::127.0.0.1", "::169.254.169.254", "::192.168.0.1", "::", "::1",  # IPv4-compatible (:: and ::1: 0.0.0.x)
    "64:ff9b::127.0.0.1", "64:ff9b::10.1.2.3", "64:ff9b::169.254.169.254", "64:ff9b::100.64.0.1",  # NAT64
    "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101:1::1",  # 6to4
])
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["::ffff:8.8.8.8", "::8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
                                     "2606:4700:4700::1111", PUBLIC])
def test_ipv6_forms_of_public_ipv4_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["64:ff9b:1::8.8.8.8", "64:ff9b:1:7f00:1::", "64:ff9b:1:ffff::a00:1"])
def test_local_use_nat64_is_refused_whatever_it_embeds(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["fec0::1", "ff0e::1", "ff02::1"])
def test_site_local_and_multicast_ipv6_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


class Dns:
    """Scripted answers, one per lookup, the last one repeated: ``Dns([PUBLIC], ["127.0.0.1"])`` rebinds."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


async def _no_such_host(host: str, port: int) -> Sequence[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@dataclass
class Net:
    session: aiohttp.ClientSession
    dialled: list[str]  # the URL of every request aiohttp made, i.e. the address it connected to
    received: list[SimpleNamespace]  # method, path, host header and body of every request that arrived


async def _answer(request: web.Request) -> web.StreamResponse:
    request.app[RECEIVED].append(SimpleNamespace(method=request.method, path=request.path,
                                                 host=request.headers.get("Host"), body=await request.read()))
    targets = {"/see-other": (303, "/landing"), "/temporary": (307, "/landing"),
               "/moved": (302, "http://127.0.0.1/inside")}
    if request.path in targets:
        status, location = targets[request.path]
        return web.Response(status=status, headers={"Location": location})
    return web.Response(text="ok")


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    app = web.Application()
    app[RECEIVED] = received = []
    app.router.add_route("*", "/{path:.*}", _answer)
    runner = web.AppRunner(app)
    await runner.setup()
    dialled: list[str] = []

    async def on_request_start(session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        dialled.append(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    with tempfile.TemporaryDirectory(prefix="pr-") as directory:  # short: socket paths are limited to 108 bytes
        path = str(Path(directory) / "net.sock")
        await web.UnixSite(runner, path).start()
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path), trace_configs=[trace]) as session:
            yield Net(session, dialled, received)
        await runner.cleanup()


async def _discard(response: aiohttp.ClientResponse) -> None:
    pass


async def test_the_request_goes_to_the_checked_address_not_a_second_dns_answer(net: Net) -> None:
    dns = Dns([PUBLIC], ["127.0.0.1"])
    await pinned_request(net.session, "POST", "http://callback.example:8080/hook?x=1", FetchPolicy(resolve=dns),
                         _discard, body=b"payload")
    assert dns.asked == ["callback.example"]  # one lookup, checked, and no other
    assert net.dialled == [f"http://{PUBLIC}:8080/hook?x=1"]
    [seen] = net.received
    assert (seen.method, seen.host, seen.body) == ("POST", "callback.example:8080", b"payload")


async def test_a_name_answering_any_private_address_is_refused_before_connecting(net: Net) -> None:
    for answer in (["127.0.0.1"], [PUBLIC, "10.0.0.7"], ["::ffff:169.254.169.254"], ["64:ff9b::7f00:1"]):
        with pytest.raises(Refused, match="'images.example' is not a public address"):
            await pinned_request(net.session, "GET", "http://images.example/a.png", FetchPolicy(resolve=Dns(answer)),
                                 _discard)
    assert not net.dialled


@pytest.mark.parametrize("url", ["http://[::ffff:7f00:1]/", "http://[::127.0.0.1]/", "http://[64:ff9b::a9fe:a9fe]/",
                                 "http://[2002:a9fe:a9fe::]/", "http://2130706433/", "http://127.1/"])
async def test_embedded_and_legacy_forms_of_private_hosts_are_refused(net: Net, url: str) -> None:
    with pytest.raises(Refused, match="not a public address"):
        await pinned_request(net.session, "GET", url, FetchPolicy(), _discard)  # the system's own resolver
    assert not net.dialled


async def test_a_redirect_hop_is_resolved_and_checked_again(net: Net) -> None:
    dns = Dns([PUBLIC], ["127.0.0.1"])  # the name rebinds between the first hop and the redirect
    with pytest.raises(Refused, match="'a.example' is not a public address"):
        await pinned_request(net.session, "GET", "http://a.example/see-other", FetchPolicy(resolve=dns), _discard)
    assert dns.asked == ["a.example", "a.example"]
    assert net.dialled == [f"http://{PUBLIC}/see-other"]


@pytest.mark.parametrize(("path", "then"), [("/see-other", ("GET", b"")), ("/temporary", ("POST", b"payload"))])
async def test_a_redirected_post_continues_as_browsers_do(net: Net, path: str, then: tuple[str, bytes]) -> None:
    await pinned_request(net.session, "POST", "http://a.example" + path, FetchPolicy(resolve=Dns([PUBLIC])), _discard,
                         body=b"payload")
    assert [(seen.method, seen.path, seen.body) for seen in net.received] == [("POST", path, b"payload"),
                                                                               (then[0], "/landing", then[1])]


async def test_no_redirect_is_followed_when_the_policy_allows_none(net: Net) -> None:
    with pytest.raises(FetchError, match="more than 0 redirects"):
        await pinned_request(net.session, "GET", "http://a.example/see-other",
                             FetchPolicy(resolve=Dns([PUBLIC]), max_redirects=0), _discard)
    assert [seen.path for seen in net.received] == ["/see-other"]


async def test_a_url_an_upstream_fetches_is_refused_when_its_host_is_private() -> None:
    for url, dns in (("http://10.0.0.1/a.png", Dns([PUBLIC])), ("http://[::ffff:a00:1]/a.png", Dns([PUBLIC])),
                     ("https://inside.example/a.png", Dns(["192.168.1.20"]))):
        with pytest.raises(Refused, match="not a public address"):
            await check_public_url(url, FetchPolicy(resolve=dns))
    with pytest.raises(Refused, match="only http and https"):
        await check_public_url("file:///etc/passwd", FetchPolicy())


async def test_a_url_an_upstream_fetches_passes_when_public_unresolvable_or_allowed() -> None:
    await check_public_url("https://cdn.example/a.png", FetchPolicy(resolve=Dns([PUBLIC])))
    await check_public_url("https://gone.example/a.png", FetchPolicy(resolve=_no_such_host))  # the upstream fails it
    lan = Dns(["192.168.1.20"])
    await check_public_url("http://nas.lan/a.png", FetchPolicy(allow_private=True, resolve=lan))
    assert not lan.asked


async def _delivered(task_id: str) -> None:
    """Wait for the task's delivery worker (named after the task) to settle its callback."""
    await next(task for task in asyncio.all_tasks() if task.get_name() == f"notify-{task_id}")


async def test_a_callback_is_posted_to_the_checked_address(net: Net) -> None:
    dns = Dns([PUBLIC], ["127.0.0.1"])
    notifier = Notifier(net.session, TaskSettings(), resolve=dns)
    notifier.send("t1", "http://hooks.example/hook", {"id": "t1", "status": "SUCCESS"}, version=7)
    await _delivered("t1")
    assert notifier.done == [("t1", 7)] and notifier.pending() == {}
    assert dns.asked == ["hooks.example"] and net.dialled == [f"http://{PUBLIC}/hook"]
    [seen] = net.received
    assert (seen.method, seen.host, orjson.loads(seen.body)) == ("POST", "hooks.example",
                                                                 {"id": "t1", "status": "SUCCESS"})


async def test_a_callback_to_a_private_address_is_given_up_at_once(net: Net) -> None:
    dns = Dns(["127.0.0.1"])
    notifier = Notifier(net.session, TaskSettings(notify_attempts=5), resolve=dns)
    notifier.send("t2", "http://hooks.example/hook", {"id": "t2"}, version=3)
    await _delivered("t2")
    assert notifier.done == [("t2", 3)]  # settled: a refusal is never retried
    assert dns.asked == ["hooks.example"] and not net.dialled


async def test_a_callback_receiver_that_redirects_is_not_followed(net: Net) -> None:
    notifier = Notifier(net.session, TaskSettings(notify_attempts=1), resolve=Dns([PUBLIC]))
    notifier.send("t3", "http://hooks.example/moved", {"id": "t3"}, version=1)
    await _delivered("t3")
    assert notifier.done == [("t3", 1)]  # given up after its one attempt
    assert [seen.path for seen in net.received] == ["/moved"]  # never re-aimed at 127.0.0.1/inside
