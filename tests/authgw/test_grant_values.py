"""A role or scope that would read as other roles or scopes in the comma-separated headers sent
upstream (X-User-Roles, X-User-Scopes) gets the token refused, by the gateway and by `spork
token verify` alike."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from spork_cli.auth.explain import accepted, explain_checks
from spork_cli.auth.verify import Verifier
from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from tests.support import Upstream

SECRET = "grant-values-secret-" + "g" * 44

AMBIGUOUS = [
    {"roles": ["viewer,admin"]},
    {"roles": ["admin "]},
    {"roles": [" admin"]},
    {"roles": ["admin\x00"]},
    {"roles": "viewer admin\x00"},
    {"scope": "read,admin write"},
    {"scope": ["read", "write,admin"]},
]


def config(upstream_url: str) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "admin": {"enabled": False},
            "logging": {"access_log": False},
            "auth": {
                "secret": SECRET,
                "forward_claims": {"sub": "X-User-Id", "roles": "X-User-Roles"},
            },
            "services": [{"name": "u", "endpoints": [upstream_url]}],
            "routes": [{"path": "/", "service": "u", "auth": "required"}],
        }
    )


def token(claims: dict[str, Any]) -> str:
    return jwt.encode(
        {"sub": "ann", "exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256"
    )


@pytest.mark.parametrize("claims", AMBIGUOUS, ids=repr)
async def test_the_gateway_refuses_a_role_or_scope_that_would_read_as_several(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    upstream: Upstream,
    claims: dict[str, Any],
) -> None:
    client = await aiohttp_client(build_app(config(upstream.url)))
    headers = {"Authorization": f"Bearer {token(claims)}"}
    async with client.get("/x", headers=headers) as response:
        assert response.status == 401
        body = await response.json()
    assert body["reason"] == "malformed"
    assert "upstream it would read as other" in body["detail"]
    assert upstream.requests == []


@pytest.mark.parametrize("claims", AMBIGUOUS, ids=repr)
async def test_token_verify_fails_the_grants_check_of_such_a_token(
    upstream: Upstream, claims: dict[str, Any]
) -> None:
    auth = config(upstream.url).auth
    assert auth is not None
    checks = await explain_checks(token(claims), Verifier(auth, Path(".")))
    assert not accepted(checks)
    assert [c.check for c in checks if c.ok is False] == ["grants"]
