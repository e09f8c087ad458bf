"""Forwarded claims read roles and scopes the way verification does, nested ones included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spork_cli.auth.mint import build_claims, sign, signing_key
from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from tests.support import Upstream

SECRET = "f" * 32


@pytest.mark.observes("auth.roles_claim")
async def test_nested_roles_and_dotted_claims_are_forwarded(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], upstream: Upstream
) -> None:
    config = GatewayConfig.model_validate(
        {
            "auth": {
                "secret": SECRET,
                "roles_claim": "realm_access.roles",
                "forward_claims": {
                    "sub": "X-User-Id",
                    "realm_access.roles": "X-User-Roles",
                    "org.name": "X-Org",
                },
            },
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [{"path": "/", "service": "u", "auth": "required", "roles": ["ops"]}],
        }
    )
    client = await aiohttp_client(build_app(config))
    claims = build_claims(
        config.auth,
        sub="ann",
        claims={"realm_access": {"roles": ["ops", "dev"]}, "org": {"name": "acme\x00x"}},
    )
    token = sign(claims, signing_key(config.auth, Path(".")))
    async with client.get("/x", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        seen = (await response.json())["headers"]
    assert seen["x-user-id"] == "ann"
    assert seen["x-user-roles"] == "ops,dev"
    assert seen["x-org"] == "acme x"


async def test_claims_go_upstream_as_utf8_and_a_lone_surrogate_as_the_replacement_character(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], upstream: Upstream
) -> None:
    config = GatewayConfig.model_validate(
        {
            "auth": {
                "secret": SECRET,
                "forward_claims": {"sub": "X-User-Id", "org": "X-Org"},
            },
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [{"path": "/", "service": "u", "auth": "required"}],
        }
    )
    client = await aiohttp_client(build_app(config))
    # JSON may escape a lone surrogate ("\ud800"), which has no UTF-8 form at all.
    claims = build_claims(config.auth, sub="a\ud800b", claims={"org": "José"})
    token = sign(claims, signing_key(config.auth, Path(".")))
    async with client.get("/x", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        seen = (await response.json())["headers"]
    assert seen["x-user-id"] == "a\ufffdb"
    assert seen["x-org"] == "José"
