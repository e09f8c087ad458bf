"""`/api/config`: the effective config, and no secret anywhere in what the admin API says."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.admin.conftest import Admin, StartAdmin
from tests.support import LOOPBACK, Upstream, free_port, replace_file

READ_ENDPOINTS = ["/api/config", "/api/routes", "/api/services", "/api/reloads"]


@dataclass(frozen=True)
class Planted:
    """Distinctive secrets, each put where the config can hold one."""

    jwt: str  # auth.secret, through ${SPORK_TEST_JWT}
    admin_token: str  # admin.token, written in the file
    redis_password: str  # in state.url
    tenant: str  # a header value through ${SPORK_TEST_TENANT}: secret only by its origin
    api_key: str  # a credential header's value, written in the file

    def all(self) -> list[str]:
        return list(vars(self).values())


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Planted:
    def make(kind: str) -> str:
        return f"{kind}-{uuid.uuid4().hex}"

    secrets = Planted(make("jwt"), make("admin"), make("redis"), make("tenant"), make("apikey"))
    monkeypatch.setenv("SPORK_TEST_JWT", secrets.jwt)
    monkeypatch.setenv("SPORK_TEST_TENANT", secrets.tenant)
    return secrets


def config_text(planted: Planted, upstream: Upstream, redis_port: int) -> str:
    return f"""
[admin]
token = "{planted.admin_token}"

[state]
backend = "redis"
url = "redis://spork:{planted.redis_password}@{LOOPBACK}:{redis_port}/0"

[auth]
secret = "${{SPORK_TEST_JWT}}"
issuer = "spork-test"

[[services]]
name = "users"
endpoints = ["{upstream.url}"]
timeout = "${{SPORK_TEST_UNSET_TIMEOUT:-5s}}"

[[routes]]
path = "/api"
service = "users"

[routes.request_headers.set]
X-Tenant = "${{SPORK_TEST_TENANT}}"
X-Api-Key = "{planted.api_key}"
"""


@pytest.fixture
async def admin(start_admin: StartAdmin, planted: Planted, upstream: Upstream) -> Admin:
    # Nothing listens on the Redis port: the gateway starts (the store connects lazily) and
    # /api/config never needs the store.
    text = config_text(planted, upstream, free_port())
    return await start_admin(text, token=planted.admin_token)


async def body_of(admin: Admin, path: str) -> bytes:
    async with admin.admin.get(path, headers=admin.headers()) as response:
        assert response.status == 200, path
        return await response.read()


def leaks(body: bytes, planted: Planted) -> list[str]:
    return [secret for secret in planted.all() if secret.encode() in body]


async def test_config_shows_the_effective_config_without_its_secrets(
    admin: Admin, planted: Planted, upstream: Upstream
) -> None:
    data = await admin.get("/api/config")
    config: dict[str, Any] = data["config"]

    assert data["file"] == str(admin.config_file)
    assert config["admin"]["token"] == "[redacted]"
    assert config["auth"]["secret"] == "${SPORK_TEST_JWT}"  # where it comes from, not what
    assert config["auth"]["issuer"] == "spork-test"
    assert config["state"]["backend"] == "redis"
    assert config["state"]["url"].startswith("redis://spork:[redacted]@127.0.0.1:")
    assert config["services"][0]["endpoints"][0]["url"] == upstream.url
    assert config["services"][0]["timeout"] == 5.0  # from ${...} too, but a number
    assert config["routes"][0]["request_headers"]["set"] == {
        "X-Tenant": "${SPORK_TEST_TENANT}",
        "X-Api-Key": "[redacted]",
    }
    assert config["server"]["port"] == 8080  # everything else as it is


@pytest.mark.parametrize("path", READ_ENDPOINTS)
async def test_no_planted_secret_appears_in_the_response(
    admin: Admin, planted: Planted, path: str
) -> None:
    assert leaks(await body_of(admin, path), planted) == []


async def test_secrets_stay_hidden_in_failed_reloads(
    admin: Admin, planted: Planted, upstream: Upstream
) -> None:
    good = config_text(planted, upstream, free_port())
    # A secret put in a numeric field is quoted (shortened) by the error message ...
    numeric = good.replace("[admin]", '[server]\nport = "${SPORK_TEST_JWT}"\n\n[admin]')
    assert (await admin.reload(numeric))["result"] == "invalid"
    # ... and a refused URL in full, with a password the served config has never held.
    other_password = f"newpw-{uuid.uuid4().hex}"
    with_password = good.replace(
        'endpoints = ["http://', f'endpoints = ["http://svc:{other_password}@'
    )
    invalid = await admin.reload(with_password)
    assert invalid["result"] == "invalid"
    # Masked when recorded, so no later view of the reload can hold it.
    assert other_password not in str(invalid["errors"])
    assert "[redacted]" in str(invalid["errors"])

    body = await body_of(admin, "/api/reloads")
    # Open even with a token set; 503 here, as nothing answers on the Redis port.
    async with admin.admin.get("/health/ready") as ready:
        open_body = await ready.read()
    assert orjson.loads(open_body)["last_reload"]["result"] == "invalid"

    for shown in (body, open_body):
        assert leaks(shown, planted) == []
        assert other_password.encode() not in shown
        assert b"[redacted]" in shown
    assert planted.jwt[:8].encode() not in body


async def test_env_values_stay_hidden_while_the_file_is_broken(
    admin: Admin, planted: Planted, upstream: Upstream
) -> None:
    text = config_text(planted, upstream, free_port())
    # Not reloaded: the served config still holds the values the old file referenced.
    replace_file(admin.config_file, text + "\n[[routes]\nbroken = \n")

    config = (await admin.get("/api/config"))["config"]
    body = await body_of(admin, "/api/config")

    assert leaks(body, planted) == []
    assert config["routes"][0]["request_headers"]["set"]["X-Tenant"] == "[redacted]"
