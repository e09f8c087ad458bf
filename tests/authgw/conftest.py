"""Helpers for the gateway auth tests: keys, hand-made tokens, a gateway in process with its
admin API, `spork serve` as a process, and the repo's gateway.toml moved to free ports.

Tokens are built here with pyjwt (or byte by byte, for the ones pyjwt refuses to make) so the
tests do not trust the minting code they are checking.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spork_cli.auth.verify import Verifier
from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE

# The auth tests' keys, re-exported: one set per process, however many folders sign with them.
from tests.auth.keyring import jwk as jwk
from tests.auth.keyring import private_key as private_key
from tests.auth.keyring import public_pem as public_pem
from tests.auth.keyring import rsa_key as rsa_key
from tests.support import assert_problem

T = TypeVar("T")
Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

SECRET = "authgw-secret-" + "k" * 50  # 64 bytes: long enough for HS512 too
OTHER_SECRET = "authgw-other-" + "q" * 51
ISSUER = "https://issuer.spork.test"
AUDIENCE = "spork-tests"
# The development default of the repo's gateway.toml (used when SPORK_JWT_SECRET is unset).
REPO_SECRET = "spork-development-secret-change-me-0123456789"

# One route per auth behaviour; every route goes to the echo upstream "svc".
ROUTES: list[dict[str, Any]] = [
    {"path": "/open", "auth": "none"},
    {"path": "/maybe", "auth": "optional"},
    {"path": "/private", "auth": "required"},
    {"path": "/roles-any", "auth": "required", "roles": ["admin", "ops"]},
    {"path": "/roles-all", "auth": "required", "roles": ["admin", "ops"], "roles_mode": "all"},
    {"path": "/scopes-all", "auth": "required", "scopes": ["read", "write"]},
    {"path": "/scopes-any", "auth": "required", "scopes": ["read", "write"], "scopes_mode": "any"},
]


# --- tokens ----------------------------------------------------------------------------------


def claims(**changes: Any) -> dict[str, Any]:
    """Claims the test gateways accept; ``name=None`` drops a claim, other values replace."""
    now = int(time.time())
    data: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": secrets.token_hex(8),
    }
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def sign(payload: Mapping[str, Any], key: Any = SECRET, alg: str = "HS256", **header: Any) -> str:
    """A token signed by pyjwt; extra keyword arguments go into the JOSE header (``kid``)."""
    return jwt.encode(dict(payload), key, algorithm=alg, headers=header or None)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: Mapping[str, Any], payload: Mapping[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand, signature as given (pyjwt refuses to make some)."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    return f"{head}.{body}.{b64url(signature)}"


HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hmac_forge(
    header: Mapping[str, Any], payload: Any, key: bytes | str = SECRET, alg: str = "HS256"
) -> str:
    """An HMAC-signed token built by hand: any header and payload (pyjwt checks some claims
    and header fields when encoding), keyed with any bytes (a PEM public key, in the
    algorithm-confusion attack)."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    secret = key.encode() if isinstance(key, str) else key
    mac = hmac.new(secret, f"{head}.{body}".encode(), HASHES[alg]).digest()
    return f"{head}.{body}.{b64url(mac)}"


def unverified(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- configs and in-process gateways ---------------------------------------------------------


def auth_section(**fields: Any) -> dict[str, Any]:
    """An [auth] table: HS256 with SECRET, ISSUER and AUDIENCE unless ``fields`` say otherwise."""
    data: dict[str, Any] = {
        "algorithms": ["HS256"],
        "secret": SECRET,
        "issuer": ISSUER,
        "audience": [AUDIENCE],
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def gateway_config(
    upstream_url: str,
    routes: list[dict[str, Any]] | None = None,
    auth: dict[str, Any] | None = None,
    **sections: Any,
) -> GatewayConfig:
    """One echo service "svc" behind ``routes`` (default ROUTES); admin listener and access
    log off, as a test serves the admin app itself when it needs it."""
    data: dict[str, Any] = {
        "admin": {"enabled": False},
        "logging": {"access_log": False},
        "services": [{"name": "svc", "endpoints": [upstream_url]}],
        "routes": [{"service": "svc", **r} for r in (ROUTES if routes is None else routes)],
        **sections,
    }
    if auth is not None:
        data["auth"] = auth
    return GatewayConfig.model_validate(data)


@pytest.fixture
def gateway(aiohttp_client: ClientFactory) -> Callable[[GatewayConfig], Awaitable[Client]]:
    """`await gateway(config)`: `build_app(config)` served on loopback, and its client."""

    async def start(config: GatewayConfig) -> Client:
        return await aiohttp_client(build_app(config))

    return start


@pytest.fixture
def admin_api(aiohttp_client: ClientFactory) -> Callable[..., Awaitable[Client]]:
    """`await admin_api(gateway_client, token=None)`: that gateway's admin app, served."""

    async def start(gateway: Client, token: str | None = None) -> Client:
        return await aiohttp_client(build_admin_app(gateway.app[TABLE], token))

    return start


def verifier_of(client: Client) -> Verifier:
    verifier = client.app[TABLE].current.verifier
    assert verifier is not None
    return verifier


async def echoed(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The echo upstream's JSON (lower-cased ``headers``), after asserting a 200."""
    raw = await response.read()
    assert response.status == 200, raw
    body: dict[str, Any] = orjson.loads(raw)
    return body


problem = assert_problem  # the name these tests know it by


def parallel(*calls: Callable[[], T]) -> list[T]:
    """Run independent blocking calls (CLI processes) side by side; results in order."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]
