"""`spork token mint|inspect|verify|revoke|keygen` as a real process, against a copy of the
repo's gateway.toml, and against `spork serve` running that copy.

Where minting is not what a test is about, its tokens are made here with pyjwt, so each CLI
command is checked on its own; independent CLI runs go side by side to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import stat
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from spork_cli.config.load import load_config
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE
from tests.authgw.conftest import (
    REPO_SECRET,
    bearer,
    parallel,
    unverified,
)
from tests.conftest import CLI_ENV, RepoConfig, StartSpork
from tests.support import SporkRunner, free_port, run_spork

OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
Result = subprocess.CompletedProcess[str]


def repo_token(secret: str = REPO_SECRET, **changes: Any) -> str:
    """A token for the repo's gateway.toml (HS256, iss and aud "spork-demo")."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "alice",
        "iss": "spork-demo",
        "aud": "spork-demo",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": secrets.token_urlsafe(12),
    }
    payload.update(changes)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret)


def minted(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def one_line_error(result: Result, code: int = 2) -> str:
    """The single `spork: ...` line a failed command writes, after checking the exit code."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spork: ")
    line: str = lines[0]
    return line


def checks_of(stdout: str) -> dict[str, tuple[str, str]]:
    """`spork token verify` output as {check: (mark, detail)}."""
    rows: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        match = re.match(r"^(ok|FAIL|--)\s+(\w+)\s+(.*)$", line)
        if match:
            rows[match[2]] = (match[1], match[3])
    return rows


async def get(http: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    async with http.get(url, headers=bearer(token) if token else {}) as response:
        return response.status, orjson.loads(await response.read())


# --- mint ------------------------------------------------------------------------------------


def test_mint_prints_only_the_token_and_json_prints_claims(repo_config: RepoConfig) -> None:
    spork = repo_config.spork
    bare, as_json = parallel(
        partial(spork, "token", "mint", "--sub", "alice", "--role", "admin"),
        partial(
            spork, "token", "mint", "--sub", "bob", "--scope", "read", "--scope", "write",
            "--claim", "tenant=acme", "--claim", "level=3", "--ttl", "1h", "--json",
        ),
    )  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    token = bare.stdout.removesuffix("\n")
    assert bare.stdout == token + "\n"
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), bare.stdout
    # Signed with the config's development secret; iss and aud default from the config.
    decoded = jwt.decode(token, REPO_SECRET, algorithms=["HS256"], audience="spork-demo")
    assert decoded["sub"] == "alice"
    assert decoded["roles"] == ["admin"]
    assert decoded["iss"] == "spork-demo"
    assert decoded["exp"] - decoded["iat"] == 15 * 60
    assert decoded["jti"]

    assert as_json.returncode == 0, as_json.stderr
    data = orjson.loads(as_json.stdout)
    assert data["alg"] == "HS256"
    assert unverified(data["token"]) == data["claims"]
    claims = data["claims"]
    assert (claims["sub"], claims["iss"], claims["aud"]) == ("bob", "spork-demo", "spork-demo")
    assert claims["scope"] == "read write"
    assert (claims["tenant"], claims["level"]) == ("acme", 3)
    assert claims["exp"] - claims["iat"] == 3600


async def test_minted_token_passes_verify_and_the_running_gateway(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    spork = repo_config.spork
    admin, plain = map(
        minted,
        parallel(
            partial(spork, "token", "mint", "--sub", "alice", "--role", "admin"),
            partial(spork, "token", "mint", "--sub", "bob"),
        ),
    )
    result = spork("token", "verify", admin, "--route", "/api/admin/users")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = checks_of(result.stdout)
    for check in ("format", "algorithm", "signature", "exp", "nbf", "iss", "aud", "roles"):
        assert rows[check][0] == "ok", rows
    assert result.stdout.strip().endswith("accepted")

    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    base = server.url
    assert await get(http, f"{base}/api/me", admin) == (200, {"sub": "alice", "roles": ["admin"]})
    assert await get(http, f"{base}/api/me", plain) == (200, {"sub": "bob", "roles": []})
    status, body = await get(http, f"{base}/api/admin/stats", admin)
    assert (status, body["admin"], body["sub"]) == (200, True, "alice")

    status, body = await get(http, f"{base}/api/admin/stats", plain)
    assert (status, body["type"]) == (403, "urn:spork:problem:missing-role")
    assert body["missing_roles"] == ["admin"]
    status, body = await get(http, f"{base}/api/me")
    assert (status, body["type"]) == (401, "urn:spork:problem:token-required")
    assert (await get(http, f"{base}/api/users"))[0] == 200


# --- verify ----------------------------------------------------------------------------------


def test_verify_route_without_the_role_exits_1_naming_roles(repo_config: RepoConfig) -> None:
    token = repo_token(sub="bob", roles=["viewer"])
    admin_route, me_route = parallel(
        partial(repo_config.spork, "token", "verify", token, "--route", "/api/admin/x"),
        partial(repo_config.spork, "token", "verify", token, "--route", "/api/me"),
    )
    assert admin_route.returncode == 1, admin_route.stdout + admin_route.stderr
    mark, detail = checks_of(admin_route.stdout)["roles"]
    assert mark == "FAIL"
    assert "admin" in detail
    assert "viewer" in detail
    assert admin_route.stdout.strip().endswith("rejected")
    # The same token is fine where no role is asked for.
    assert me_route.returncode == 0, me_route.stdout


def test_verify_expired_and_foreign_tokens_exit_1_naming_the_check(
    repo_config: RepoConfig,
) -> None:
    now = int(time.time())
    expired = repo_token(iat=now - 1000, nbf=now - 1000, exp=now - 190)
    foreign = repo_token(OTHER_SECRET)
    old, other = parallel(
        partial(repo_config.spork, "token", "verify", expired),
        partial(repo_config.spork, "token", "verify", "-", input=foreign + "\n"),
    )
    assert old.returncode == 1, old.stdout + old.stderr
    rows = checks_of(old.stdout)
    assert rows["exp"][0] == "FAIL"
    assert re.search(r"expired 3m( \d+s)? ago", rows["exp"][1]), rows["exp"]
    assert rows["signature"][0] == "ok"

    assert other.returncode == 1, other.stdout + other.stderr
    assert checks_of(other.stdout)["signature"][0] == "FAIL"
    assert OTHER_SECRET not in other.stdout + other.stderr
    assert REPO_SECRET not in other.stdout + other.stderr


# --- inspect ---------------------------------------------------------------------------------


def test_inspect_says_it_did_not_verify_and_shows_human_times(repo_config: RepoConfig) -> None:
    now = int(time.time())
    fresh = repo_token(sub="alice")
    # A token no key would accept decodes just the same: inspect checks nothing.
    stale = repo_token(OTHER_SECRET, iat=now - 1000, nbf=now - 1000, exp=now - 190)
    first, second, piped = parallel(
        partial(repo_config.spork, "token", "inspect", fresh),
        partial(repo_config.spork, "token", "inspect", stale),
        partial(repo_config.spork, "token", "inspect", "-", "--json", input=f"  {fresh}\n"),
    )
    assert first.returncode == 0, first.stderr
    assert "WITHOUT verifying" in first.stdout.splitlines()[0]
    assert re.search(r"exp: \d+ +\(expires in 1[45]m, \d{4}-\d\d-\d\dT", first.stdout)
    assert '"alg": "HS256"' in first.stdout
    assert 'sub: "alice"' in first.stdout

    assert second.returncode == 0, second.stderr
    assert "WITHOUT verifying" in second.stdout
    assert re.search(r"exp: \d+ +\(expired 3m( \d+s)? ago", second.stdout), second.stdout

    assert piped.returncode == 0, piped.stderr
    data = orjson.loads(piped.stdout)
    assert data["verified"] is False
    assert data["claims"] == unverified(fresh)
    assert data["times"]["exp"]["human"].startswith("expires in")


def test_inspect_dash_reads_stdin(repo_config: RepoConfig) -> None:
    result = repo_config.spork("token", "inspect", "-", input=repo_token(sub="piped") + "\n")
    assert result.returncode == 0, result.stderr
    assert "WITHOUT verifying" in result.stdout
    assert 'sub: "piped"' in result.stdout


def test_garbage_tokens_give_one_line_and_no_traceback(repo_config: RepoConfig) -> None:
    spork = repo_config.spork
    no_jti = repo_token(jti=None)
    inspect, inspect_b64, revoke, verify, empty, jti_less = parallel(
        partial(spork, "token", "inspect", "garbage"),
        partial(spork, "token", "inspect", "eyJhbGciOiJIUzI1NiJ9.!!.sig"),
        partial(spork, "token", "revoke", "a.b"),
        partial(spork, "token", "verify", "x.y.z"),
        partial(spork, "token", "inspect", "-", input="\n"),
        partial(spork, "token", "revoke", no_jti),
    )
    # Each says "not a JWT" once, whichever part of the token is wrong.
    assert one_line_error(inspect) == "spork: not a JWT (header.payload.signature)"
    assert one_line_error(inspect_b64) == (
        "spork: not a JWT: the token header is not base64url JSON"
    )
    assert one_line_error(revoke) == "spork: not a JWT (header.payload.signature)"
    assert "no token" in one_line_error(empty)
    assert "--jti" in one_line_error(jti_less)
    # verify reports a token it rejects with exit 1 and the failed check named.
    assert verify.returncode == 1
    assert checks_of(verify.stdout)["format"][0] == "FAIL"
    assert "Traceback" not in verify.stderr


# --- keygen ----------------------------------------------------------------------------------


def keygen_round_trip(run_spork: SporkRunner, root: Path, alg: str) -> None:
    """keygen, then its printed lines as the whole [auth] of a gateway.toml, then mint and
    verify with that file. The config lives below the working directory, so the printed
    paths must be relative to the config file, not to where the command ran."""
    work = root / alg
    (work / "conf").mkdir(parents=True)
    config = work / "conf" / "gateway.toml"
    env: dict[str, str | None] = dict(CLI_ENV)

    def spork(*args: str) -> Result:
        return run_spork("-c", str(config), *args, cwd=work, env=env)

    result = spork("token", "keygen", "--alg", alg, "-o", "keys")
    assert result.returncode == 0, result.stderr
    written = [Path(line.removeprefix("wrote ")) for line in result.stdout.splitlines()
               if line.startswith("wrote ")]  # fmt: skip
    assert written, result.stdout
    for path in written:
        assert (work / path).parent == work / "keys"
        mode = stat.S_IMODE((work / path).stat().st_mode)
        expected = 0o644 if path.name.endswith("-public.pem") else 0o600
        assert mode == expected, (alg, path, oct(mode))
    lines = result.stdout.split("add to gateway.toml:", 1)[1].strip().splitlines()
    assert lines[0] == "[auth]"
    assert f'algorithms = ["{alg}"]' in lines
    # An admin port of its own: verify asks a gateway there about revocations, and one of
    # another test (the README tour's, on the default 9901) must not answer.
    config.write_text(f"[admin]\nport = {free_port()}\n\n" + "\n".join(lines) + "\n")

    if alg.startswith("HS"):
        assert "$(cat ../keys/hs256.secret)" in result.stdout
        env["SPORK_JWT_SECRET"] = (work / "keys" / "hs256.secret").read_text().strip()
    else:
        assert f'public_key_file = "../keys/{alg.lower()}-public.pem"' in lines
    mint = spork("token", "mint", "--sub", "k", "--json")
    assert mint.returncode == 0, mint.stderr
    data = orjson.loads(mint.stdout)
    assert data["alg"] == alg
    verify = spork("token", "verify", data["token"])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert checks_of(verify.stdout)["signature"][0] == "ok"

    if alg == "ES256":
        private = work / "keys" / "es256-private.pem"
        before = private.read_bytes()
        assert "already exists" in one_line_error(spork("token", "keygen", "--alg", alg,
                                                        "-o", "keys"))  # fmt: skip
        assert private.read_bytes() == before


@pytest.mark.observes("auth.private_key_file")
def test_keygen_writes_keys_and_config_lines_that_work(
    tmp_path: Path, run_spork: SporkRunner
) -> None:
    for algs in (("HS256", "RS256"), ("ES256", "EdDSA")):
        parallel(*(partial(keygen_round_trip, run_spork, tmp_path, alg) for alg in algs))


# --- revoke with memory state ------------------------------------------------------------------


async def test_revoke_goes_through_the_running_gateway(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    token, other = repo_token(), repo_token(sub="bob")
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    assert (await get(http, f"{server.url}/api/me", token))[0] == 200

    result = repo_config.spork("token", "revoke", token)
    assert result.returncode == 0, result.stderr
    assert unverified(token)["jti"] in result.stdout
    assert f"127.0.0.1:{repo_config.admin_port}" in result.stdout

    status, body = await get(http, f"{server.url}/api/me", token)
    assert (status, body["reason"]) == (401, "revoked")
    assert (await get(http, f"{server.url}/api/me", other))[0] == 200
    # verify asks the same gateway, and names the revocation.
    result = repo_config.spork("token", "verify", token)
    assert result.returncode == 1
    assert checks_of(result.stdout)["revoked"][0] == "FAIL"


def test_revoke_without_a_running_gateway_exits_2(repo_config: RepoConfig) -> None:
    by_token, by_jti = parallel(
        partial(repo_config.spork, "token", "revoke", repo_token()),
        partial(repo_config.spork, "token", "revoke", "--jti", "abc"),
    )
    for result in (by_token, by_jti):
        line = one_line_error(result)
        assert "admin API" in line
        assert f"127.0.0.1:{repo_config.admin_port}" in line
        assert "spork serve" in line


async def test_revoke_sends_the_admin_token(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    admin_token = "admin-token-for-tests-0123456789"

    def protect(document: Any) -> None:
        document["admin"]["token"] = admin_token

    repo_config.edit(protect)
    token = repo_token()
    jti = unverified(token)["jti"]
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)

    # Without the token the admin API refuses, and nothing is revoked.
    async with http.post(
        f"{server.admin_url}/api/revocations", json={"jti": jti, "ttl": 60}
    ) as response:
        assert response.status == 401
        assert (await response.json(loads=orjson.loads))["type"].endswith("admin-token")
    assert (await get(http, f"{server.url}/api/me", token))[0] == 200

    # A CLI whose config holds another admin token is refused, with the status in one line.
    wrong = repo_config.path.with_name("wrong-token.toml")
    wrong.write_text(repo_config.path.read_text().replace(admin_token, "not-the-admin-token"))
    refused, revoked = parallel(
        partial(run_spork, "-c", str(wrong), "token", "revoke", token,
                cwd=repo_config.directory, env=CLI_ENV),
        partial(repo_config.spork, "token", "revoke", "--jti", "someone-else"),
    )  # fmt: skip
    line = one_line_error(refused)
    assert "401" in line
    assert admin_token not in refused.stderr
    assert (await get(http, f"{server.url}/api/me", token))[0] == 200
    assert revoked.returncode == 0, revoked.stderr

    result = repo_config.spork("token", "revoke", token)
    assert result.returncode == 0, result.stderr
    status, body = await get(http, f"{server.url}/api/me", token)
    assert (status, body["reason"]) == (401, "revoked")


# --- known defects -----------------------------------------------------------------------------


async def test_verify_sees_the_revocation_of_a_jti_with_reserved_characters(
    repo_config: RepoConfig,
    aiohttp_client: Any,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SPORK_JWT_SECRET", raising=False)
    gateway = await aiohttp_client(build_app(load_config(repo_config.path)))
    admin = build_admin_app(gateway.app[TABLE])
    await aiohttp_server(admin, port=repo_config.admin_port)
    plain, reserved = repo_token(jti="plain-jti"), repo_token(jti="team/7?x#y")
    for token in (plain, reserved):
        jti = unverified(token)["jti"]
        async with aiohttp.ClientSession() as http:
            url = f"{repo_config.admin_url}/api/revocations"
            async with http.post(url, json={"jti": jti, "ttl": 60}) as answer:
                assert answer.status == 200
        refused = await gateway.get("/api/me", headers=bearer(token))
        assert (await refused.json())["reason"] == "revoked"
    control, result = await asyncio.gather(
        asyncio.to_thread(repo_config.spork, "token", "verify", plain),
        asyncio.to_thread(repo_config.spork, "token", "verify", reserved),
    )
    # The control proves the harness: verify reaches this admin API and sees revocations.
    assert control.returncode == 1, control.stdout
    assert checks_of(control.stdout)["revoked"][0] == "FAIL"
    assert result.returncode == 1, result.stdout
    assert checks_of(result.stdout)["revoked"][0] == "FAIL"


def test_verify_route_reads_the_path_as_the_gateway_routes_it(repo_config: RepoConfig) -> None:
    """Every spelling the gateway routes to the admin route is checked against its roles, and
    a path the gateway refuses is one line and exit 2, never another route's verdict."""
    token = repo_token(sub="bob", roles=["viewer"])
    spellings = ("/api/%61dmin/x", "/api/./admin/x", "/api//admin/x", "/api/me/../admin/x")
    for result in parallel(
        *(partial(repo_config.spork, "token", "verify", token, "--route", p) for p in spellings)
    ):
        assert result.returncode == 1, result.stdout + result.stderr
        assert checks_of(result.stdout)["roles"][0] == "FAIL", result.stdout
    refused = repo_config.spork("token", "verify", token, "--route", "/api/admin%2Fx")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("spork: the gateway refuses the path /api/admin%2Fx: "), line
