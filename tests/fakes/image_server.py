"""A loopback web server with images, for the SSRF-safe fetching of ``image_url`` parts."""

from __future__ import annotations

import asyncio
import base64

from aiohttp import web

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


async def cat(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


async def untyped(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="application/octet-stream")  # sniffed as PNG


async def page(request: web.Request) -> web.Response:
    return web.Response(text="<html>not an image</html>", content_type="text/html")


async def redirect(request: web.Request) -> web.Response:
    hops = int(request.query.get("hops", "1"))
    target = "/cat.png" if hops <= 1 else f"/redirect?hops={hops - 1}"
    raise web.HTTPFound(target)


async def huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})  # no Content-Length: chunked
    await response.prepare(request)
    for _ in range(64):
        await response.write(b"\0" * 65536)  # 4 MiB
    await response.write_eof()
    return response


async def to(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["url"])


async def stall(request: web.Request) -> web.Response:
    await asyncio.get_running_loop().create_future()  # never answers; cancelled when the client leaves
    raise AssertionError("unreachable")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/cat.png", cat)
    app.router.add_get("/untyped", untyped)
    app.router.add_get("/page.html", page)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/huge.png", huge)
    app.router.add_get("/to", to)
    app.router.add_get("/stall", stall)
    return app
