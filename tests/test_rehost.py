"""Re-hosting provider results (``files.rehost``): polyrelay's own ``/files/{id}`` URLs instead of the provider's."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from polyrelay.billing.meter import usd_to_micros
from polyrelay.store.files import FileSettings, FileStore
from tests.conftest import Gateway, wait_until
from tests.fakes import bfl_upstream, ideogram_upstream, recraft_upstream, stability_upstream
from tests.fakes.server import FakeServer
from tests.image_setup import ALICE, BFL_KEY, IDEOGRAM_KEY, JPEG, RECRAFT_KEY, STABILITY_KEY, ImageSetup, config

SAMPLE_ID = hashlib.sha256(bfl_upstream.SAMPLE_PNG).hexdigest() + ".png"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeServer, ...]]:
    servers = (
        FakeServer(ideogram_upstream.create_app({IDEOGRAM_KEY})).start(),
        FakeServer(bfl_upstream.create_app({BFL_KEY})).start(),
        FakeServer(recraft_upstream.create_app({RECRAFT_KEY})).start(),
        FakeServer(stability_upstream.create_app({STABILITY_KEY})).start(),
    )
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def rehosting(gateway_factory: Callable[..., Gateway], fakes: tuple[FakeServer, ...], files_dir: Path) -> ImageSetup:
    # The fakes are on loopback; Ideogram's result host is not its API host, so it is listed (as ideogram.ai would be).
    settings = {**config(*(fake.url for fake in fakes)), "allow_private_image_hosts": True,
                "files": {"rehost": True, "dir": str(files_dir), "hosts": {"ideogram": ["localhost"]}},
                "tasks": {"poll_interval_s": 0.05}}
    return ImageSetup(gateway_factory(settings), *fakes)


@pytest.fixture(scope="module")
def plain(gateway_factory: Callable[..., Gateway], fakes: tuple[FakeServer, ...]) -> ImageSetup:
    return ImageSetup(gateway_factory({**config(*(fake.url for fake in fakes)), "allow_private_image_hosts": True}),
                      *fakes)


def test_flux_alias_result_is_served_by_polyrelay(rehosting: ImageSetup, files_dir: Path) -> None:
    downloads_before = sum(r.path.startswith("/samples/") for r in rehosting.bfl.requests)
    raw = rehosting.client().images.with_raw_response.generate(model="flux-pro-1.1", prompt="a lighthouse")
    images = raw.parse()
    assert images.data is not None
    url = images.data[0].url
    assert url == f"{rehosting.gateway.url}/files/{SAMPLE_ID}"
    assert images.data[0].revised_prompt == "a lighthouse"
    assert sum(r.path.startswith("/samples/") for r in rehosting.bfl.requests) == downloads_before + 1
    assert (files_dir / SAMPLE_ID[:2] / SAMPLE_ID).read_bytes() == bfl_upstream.SAMPLE_PNG

    served = httpx.get(url, timeout=10)  # no key needed: the id is the content's hash
    assert served.status_code == 200
    assert served.content == bfl_upstream.SAMPLE_PNG
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in served.headers["cache-control"]
    ranged = httpx.get(url, headers={"Range": "bytes=0-7"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == bfl_upstream.SAMPLE_PNG[:8]
    head = httpx.head(url, timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(bfl_upstream.SAMPLE_PNG)

    row = rehosting.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.images, row.cost_micros) == ("bfl", 1, usd_to_micros(0.04))


def test_the_same_content_is_stored_once(rehosting: ImageSetup, files_dir: Path) -> None:
    # The directory is the module's: the other backend's run may have stored other results in it already.
    before = {p.name for p in files_dir.rglob("*") if p.is_file()}
    first = rehosting.client().images.generate(model="flux-pro-1.1", prompt="one")
    second = rehosting.client().images.generate(model="flux-pro-1.1", prompt="two")
    assert first.data is not None and second.data is not None
    assert first.data[0].url == second.data[0].url == f"{rehosting.gateway.url}/files/{SAMPLE_ID}"
    stored = {p.name for p in files_dir.rglob("*") if p.is_file()}
    assert SAMPLE_ID in stored and stored - before <= {SAMPLE_ID}  # no second copy, no temporary file left behind


def test_b64_json_answers_are_left_alone(rehosting: ImageSetup) -> None:
    images = rehosting.client().images.generate(model="flux-pro-1.1", prompt="x", response_format="b64_json")
    assert images.data is not None and images.data[0].url is None and images.data[0].b64_json


def test_ideogram_result_on_a_foreign_host_keeps_its_url(rehosting: ImageSetup) -> None:
    """The fake Ideogram answers with ideogram.ai URLs, not its own (loopback) host: not downloaded, left as is."""
    response = rehosting.post("/ideogram/generate", json={"image_request": {"prompt": "a cat", "num_images": 2}})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2
    assert all(item["url"].startswith("https://ideogram.ai/api/images/ephemeral/") for item in data)
    assert rehosting.row(response).images == 2


def test_ideogram_remix_results_are_served_by_polyrelay(rehosting: ImageSetup) -> None:
    rehosting.ideogram.knobs["image_host"] = "localhost"  # result URLs on another host name than the API's
    try:
        response = rehosting.post("/ideogram/v1/remix", files={"image_file": ("beach.jpg", JPEG, "image/jpeg")},
                                  data={"image_request": '{"prompt": "a beach", "num_images": 2, "seed": 7}'})
    finally:
        del rehosting.ideogram.knobs["image_host"]
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    urls = [item["url"] for item in data]
    assert len(set(urls)) == 2 and all(url.startswith(f"{rehosting.gateway.url}/files/") for url in urls)
    assert all(item["seed"] == 7 and item["is_image_safe"] is True for item in data)  # the rest is Ideogram's

    provider_paths = [r.path for r in rehosting.ideogram.requests if r.path.startswith("/api/images/ephemeral/")]
    provider_images = {ideogram_upstream.image_bytes(path.rsplit("/", 1)[1]) for path in provider_paths[-2:]}
    assert {httpx.get(url, timeout=10).content for url in urls} == provider_images
    row = rehosting.row(response)
    assert (row.model, row.images, row.cost_micros) == ("ideogram-V_2", 2, 2 * usd_to_micros(0.08))


def test_recraft_result_on_a_foreign_host_keeps_its_url(rehosting: ImageSetup) -> None:
    images = rehosting.client().images.generate(model="recraftv3", prompt="a logo")
    assert images.data is not None and (images.data[0].url or "").startswith("https://img.recraft.ai/")


def _get(setup: ImageSetup, path: str) -> httpx.Response:
    return httpx.get(setup.gateway.url + path, headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)


def test_flux_task_result_is_rehosted_before_it_is_stored(rehosting: ImageSetup) -> None:
    submitted = rehosting.post("/flux/v1/flux-pro-1.1", json={"prompt": "a lighthouse"})
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["id"]

    def ready() -> dict[str, Any] | None:
        answer = _get(rehosting, f"/flux/v1/get_result?id={task_id}").json()
        return answer if answer["status"] == "Ready" else None

    result = wait_until(ready, what="the flux task Ready")
    assert result["result"]["sample"] == f"{rehosting.gateway.url}/files/{SAMPLE_ID}"
    assert result["result"]["prompt"] == "a lighthouse"  # the rest of BFL's result is kept
    task = _get(rehosting, f"/v1/tasks/{task_id}").json()
    assert task["data"]["result"]["sample"] == result["result"]["sample"]
    assert httpx.get(result["result"]["sample"], timeout=10).content == bfl_upstream.SAMPLE_PNG


def test_off_by_default(plain: ImageSetup) -> None:
    images = plain.client().images.generate(model="flux-pro-1.1", prompt="a lighthouse")
    assert images.data is not None and (images.data[0].url or "").startswith(plain.bfl.url + "/samples/")


@pytest.mark.parametrize("file_id", ["nothing", SAMPLE_ID.replace(".png", ".exe"), "0" * 64 + ".png",
                                     "..%2F..%2Fetc%2Fpasswd"])
def test_unknown_or_malformed_ids_are_404(rehosting: ImageSetup, plain: ImageSetup, file_id: str) -> None:
    for setup in (rehosting, plain):
        response = httpx.get(f"{setup.gateway.url}/files/{file_id}", timeout=10)
        assert response.status_code == 404
        # A decoded "/" makes it another path altogether: the gateway's own 404 for unknown URLs.
        assert response.json()["error"]["code"] == ("unknown_url" if "%2F" in file_id else "file_not_found")


# --- the store's download rules, on a fake provider of our own ----------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 20


def _provider() -> web.Application:
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="application/octet-stream")  # sniffed as PNG

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})  # no length: the limit counts bytes
        await response.prepare(request)
        for _ in range(8):
            await response.write(b"\x89PNG\r\n\x1a\n" + bytes(1000))
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    async def away(request: web.Request) -> web.Response:  # to the same server under another name
        raise web.HTTPFound(f"http://localhost:{request.url.port}/image.png")

    async def home(request: web.Request) -> web.Response:
        raise web.HTTPFound("/image.png")

    app = web.Application()
    for path, handler in {"/image.png": image, "/big.png": big, "/page": page, "/away": away, "/home": home}.items():
        app.router.add_get(path, handler)
    return app


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeServer]:
    server = FakeServer(_provider()).start()
    yield server
    server.stop()


def _rehost(provider: FakeServer, tmp_path: Path, urls: list[str], hosts: dict[str, list[str]] | None = None,
            max_bytes: int = 4000) -> list[str | None]:
    store = FileStore(FileSettings(rehost=True, dir=tmp_path, max_bytes=max_bytes, hosts=hosts or {}),
                      "https://relay.example", allow_private=True)
    channel: Any = SimpleNamespace(name="c", type="ideogram", base_url=provider.url)

    async def run() -> list[str | None]:
        async with aiohttp.ClientSession() as session:
            return [await store.rehost_url(url, channel, session) for url in urls]

    return asyncio.run(run())


def test_store_rules(provider: FakeServer, tmp_path: Path) -> None:
    base = provider.url
    port = base.rsplit(":", 1)[1]
    png_id = hashlib.sha256(PNG).hexdigest() + ".png"
    asked = len(provider.requests)
    results = _rehost(provider, tmp_path, [
        f"{base}/image.png",  # the channel's own host
        f"{base}/home",  # a redirect on it
        f"{base}/big.png",  # over max_bytes
        f"{base}/page",  # not an image
        f"{base}/away",  # a redirect to another host
        f"http://localhost:{port}/image.png",  # another host: never asked
        "ftp://example.com/x.png",
    ])
    assert results == [f"https://relay.example/files/{png_id}"] * 2 + [None] * 5
    assert [r.path for r in provider.requests[asked:]] == ["/image.png", "/home", "/image.png", "/big.png", "/page",
                                                          "/away"]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [png_id]  # nothing partial left behind


def test_operator_listed_hosts(provider: FakeServer, tmp_path: Path) -> None:
    port = provider.url.rsplit(":", 1)[1]
    png_id = hashlib.sha256(PNG).hexdigest() + ".png"
    other_type = _rehost(provider, tmp_path, [f"http://localhost:{port}/image.png"], hosts={"recraft": ["localhost"]})
    listed = _rehost(provider, tmp_path, [f"http://localhost:{port}/image.png", f"{provider.url}/away"],
                     hosts={"ideogram": ["localhost"]})
    assert other_type == [None]
    assert listed == [f"https://relay.example/files/{png_id}"] * 2
