"""The usual Python alternative: a FastAPI app proxying `/api/users/{rest}` with one shared
httpx.AsyncClient, served by uvicorn with one worker (httptools and uvloop when installed, as
`uvicorn[standard]` has them). Needs `pip install -e '.[bench]'`.

python bench/fastapi_proxy.py LISTEN_PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def build(upstream: str) -> FastAPI:
    upstream = upstream.rstrip("/")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # httpx's default limits on purpose: with more idle connections its pool (httpcore
        # 1.0) spends longer choosing one for each queued request and the proxy gets slower.
        async with httpx.AsyncClient(base_url=upstream) as client:
            app.state.client = client
            yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/api/users/{rest:path}", methods=METHODS)
    async def proxy(request: Request) -> Response:
        target = request.scope["raw_path"].decode("latin-1")
        if request.url.query:
            target += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP]
        body = await request.body()
        answer = await request.app.state.client.request(
            request.method, target, headers=headers, content=body or None
        )
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    return app


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(
        build(sys.argv[2]),
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
