"""Structured logs: JSON lines when stdout is not a terminal, readable when it is."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR


def _dumps(data: Any, **_: Any) -> bytes:
    return orjson.dumps(data, default=str)


def configure(level: str = "info", fmt: str = "auto") -> None:
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=True)]
        factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    _route_stdlib(processors[-1], shared, LEVELS.get(level, logging.INFO))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


class _DropClientErrors(logging.Filter):
    """Malformed requests are the client's problem and already answered with 400. So is a
    body that cannot be decoded (a bad Content-Encoding) which aiohttp reads to its end after
    an answer that did not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import BadHttpMessage
        from aiohttp.web_protocol import RequestPayloadError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, BadHttpMessage | RequestPayloadError)


def _route_stdlib(renderer: Any, shared: list[Any], level: int) -> None:
    """Libraries logging through ``logging`` (aiohttp, asyncio) come out in the same format."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.processors.format_exc_info],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _text(renderer)],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_DropClientErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _text(renderer: Any) -> Any:
    def render(logger: Any, name: str, event: Any) -> str:
        out = renderer(logger, name, event)
        return out.decode() if isinstance(out, bytes) else str(out)

    return render
