"""WebSocket upgrades proxied both ways: frames are relayed until either side closes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from spork_cli.gateway.forwarding import require_utf8
from spork_cli.gateway.keys import ENDPOINT, REQUEST_ID
from spork_cli.gateway.table import strip
from spork_cli.problems import HTTPProblem

if TYPE_CHECKING:
    from spork_cli.gateway.table import CompiledRoute

_SKIP = frozenset(
    h.lower()
    for h in (
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
    )
)


async def proxy_websocket(request: web.Request, route: CompiledRoute) -> web.StreamResponse:

    pool = route.pool
    endpoint = pool.balancer.pick()
    if endpoint is None:
        raise HTTPProblem(503, "no-healthy-endpoint", f"service '{pool.name}' has no endpoint")
    request[ENDPOINT] = endpoint.url
    headers = CIMultiDict(
        (k, v) for k, v in route.upstream_headers(request, endpoint) if k.lower() not in _SKIP
    )
    require_utf8(headers.items())
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    base = endpoint.base.with_scheme("wss" if endpoint.base.scheme == "https" else "ws")
    url = URL(str(base) + strip(route, request.raw_path), encoded=True)
    assert pool.session is not None
    pool.acquire(endpoint)
    try:
        try:
            upstream = await pool.session.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise HTTPProblem(
                502, "upstream-refused-websocket", f"service '{pool.name}' refused the upgrade"
            ) from exc
        except aiohttp.ClientError as exc:
            raise HTTPProblem(
                502, "upstream-unreachable", f"service '{pool.name}' could not be reached"
            ) from exc
        async with upstream:
            chosen = (upstream.protocol,) if upstream.protocol else ()
            client = web.WebSocketResponse(protocols=chosen, autoping=True)
            client.headers["X-Request-ID"] = request[REQUEST_ID]
            await client.prepare(request)
            await _pump(client, upstream)
            return client
    finally:
        pool.release(endpoint)


async def _pump(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def relay(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == WSMsgType.ERROR:
                break
        await sink.close(code=source.close_code or 1000)

    to_upstream = asyncio.create_task(relay(client, upstream))
    to_client = asyncio.create_task(relay(upstream, client))
    done, pending = await asyncio.wait((to_upstream, to_client), return_when="FIRST_COMPLETED")
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()
