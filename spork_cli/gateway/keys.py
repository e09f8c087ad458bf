"""Every key of the gateway's typed app and request storage, and the table switch.

A leaf: it imports nothing of spork at run time, so any module can name a key without
importing the module that sets it (and without an import back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from spork_cli.auth.claims import Identity
    from spork_cli.config.model import GatewayConfig
    from spork_cli.gateway.accesslog import AccessLog
    from spork_cli.gateway.compile import GatewayTable, Resources
    from spork_cli.gateway.header_edits import HeaderEdits
    from spork_cli.gateway.metrics import GatewayMetrics
    from spork_cli.gateway.reload import Reloader
    from spork_cli.middleware.cors import CorsAnswer
    from spork_cli.middleware.security import Pairs
    from spork_cli.policies.cache import Capture


@dataclass(eq=False)
class TableHolder:
    """The table switch: the one reference a reload swaps; requests read ``current`` once
    each. The rest is what the reloader and the admin API need beside it."""

    current: GatewayTable
    resources: Resources
    config_file: Path | None = None
    access_log: AccessLog | None = None
    watch: bool = False
    # Applied to every config read from the file (command-line overrides of static settings).
    prepare: Callable[[GatewayConfig], GatewayConfig] | None = None
    reloads: list[dict[str, object]] = field(default_factory=list)


# --- the gateway app ---------------------------------------------------------------------------
TABLE: web.AppKey[TableHolder] = web.AppKey("spork.table")
METRICS: web.AppKey[GatewayMetrics] = web.AppKey("spork.metrics")
RELOADER: web.AppKey[Reloader] = web.AppKey("spork.reloader")
# This gateway's id in the state store's instance list (`spork instances`).
INSTANCE = web.AppKey("spork.instance", str)
# Set on the supervisor of --workers N: how many workers must listen before it is ready.
WORKERS = web.AppKey("spork.workers", int)

# --- the admin app (and WORKERS, on the supervisor's) -------------------------------------------
# The table switch of the gateway the admin listener looks into (never TABLE: an app holding
# TABLE is served as the gateway itself).
GATEWAY_TABLE: web.AppKey[TableHolder] = web.AppKey("spork.admin.gateway_table")
DASHBOARD_PAGE = web.AppKey("spork.dashboard.page", str)
DASHBOARD_FILES = web.AppKey("spork.dashboard.files", dict[str, bytes])

# --- one request -------------------------------------------------------------------------------
REQUEST_ID = web.RequestKey("spork.request_id", str)
ENDPOINT = web.RequestKey("spork.endpoint", str)
UPSTREAM_SECONDS = web.RequestKey("spork.upstream_seconds", float)
# Headers a middleware adds to the response the proxy relays (e.g. rate-limit headers).
RESPONSE_HEADERS = web.RequestKey("spork.response_headers", dict)
# Set by the auth middleware for a verified token.
IDENTITY: web.RequestKey[Identity] = web.RequestKey("spork.identity")
# Set by the cache middleware on a miss: the proxy keeps a copy of a streamed body in it.
CAPTURE: web.RequestKey[Capture] = web.RequestKey("spork.capture")
# The conditions the cache sends upstream in place of the client's If-None-Match and
# If-Modified-Since (its own validators, or none, to get a whole response it can store).
UPSTREAM_CONDITIONS = web.RequestKey("spork.upstream_conditions", tuple)
# A body a middleware has already read whole (to validate it): the proxy sends these bytes.
BODY = web.RequestKey("spork.body", bytes)
# The security headers and CORS answer of this request's response: dispatch decides them, the
# prepare hook applies them (also to streamed answers, which the proxy prepares itself).
EDGE_HEADERS: web.RequestKey[tuple[Pairs, CorsAnswer | None]] = web.RequestKey("spork.edge")
# The route's [routes.response_headers], applied last by the same hook.
RESPONSE_EDITS: web.RequestKey[HeaderEdits] = web.RequestKey("spork.response_edits")
