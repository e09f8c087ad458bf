"""The admin listener: liveness, readiness and service health (JSON)."""

from __future__ import annotations

import orjson
from aiohttp import web

from spork_cli.gateway.app import TABLE

GATEWAY = web.AppKey("spork.gateway", web.Application)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    holder = gateway.get(TABLE)
    if holder is None:
        return _json({"status": "starting"}, status=503)
    last = holder.reloads[-1] if holder.reloads else None
    return _json(
        {
            "status": "ready",
            "routes": len(holder.current.routes),
            "services": len(holder.current.pools),
            "last_reload": last,
        }
    )


async def services(request: web.Request) -> web.Response:
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None:
        return _json({"services": []}, status=503)
    snapshots = [pool.snapshot() for pool in holder.current.pools.values()]
    healthy = all(s["healthy"] for s in snapshots)
    return _json({"healthy": healthy, "services": snapshots})


def build_admin_app(gateway: web.Application) -> web.Application:
    app = web.Application()
    app[GATEWAY] = gateway
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health/services", services)
    return app
