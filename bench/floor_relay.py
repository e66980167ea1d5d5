"""The floor: the simplest relay that still does a gateway's minimum (loopback benchmark only).

It checks the bearer key, parses the JSON body (a gateway must read the model), forwards the
bytes to one upstream over a keep-alive pool and relays the answer: whole for JSON, chunk by
chunk for SSE. No routing, billing, logging or limits. bench/run.py measures polyrelay's ratio
to it, so a change is judged against what any Python relay must pay, not only against the
upstream.

Usage: python bench/floor_relay.py --port N --upstream http://127.0.0.1:M --key K   (prints "ready")
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import orjson
import uvloop
from aiohttp import web


def make_app(upstream: str, key: str) -> web.Application:
    expected = f"Bearer {key}"
    app = web.Application()

    async def open_pool(app: web.Application) -> None:
        app["pool"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def close_pool(app: web.Application) -> None:
        await app["pool"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.read()
        if not isinstance(orjson.loads(body).get("model"), str):
            return web.json_response({"error": {"message": "no model"}}, status=400)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer upstream"}
        async with app["pool"].post(upstream + request.path, data=body, headers=headers) as answer:
            kind = answer.headers.get("Content-Type", "application/json")
            if not kind.startswith("text/event-stream"):
                return web.Response(body=await answer.read(), status=answer.status, content_type=kind.split(";")[0])
            out = web.StreamResponse(status=answer.status, headers={"Content-Type": kind})
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app.router.add_post("/v1/chat/completions", relay)
    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    return app


async def serve(port: int, upstream: str, key: str) -> None:
    runner = web.AppRunner(make_app(upstream, key), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.port, args.upstream, args.key))
    except KeyboardInterrupt:  # bench/run.py stops it with SIGINT
        pass


if __name__ == "__main__":
    main()
