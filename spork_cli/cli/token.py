"""`spork token mint|inspect|verify|revoke|keygen`: tokens the gateway accepts, with its keys."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spork_cli.cli.params import Command, ConfigOption, Group, JsonOption, config_file
from spork_cli.errors import UsageError

if TYPE_CHECKING:
    from spork_cli.auth import TokenRejected
    from spork_cli.config.model import GatewayConfig

token_app = typer.Typer(cls=Group, help="Mint, inspect, verify and revoke JWTs; generate keys.")
TokenArg = Annotated[str, typer.Argument(metavar="TOKEN", help="The token, or - to read stdin.")]


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token", no_args_is_help=True)


def _config(path: Path, required: bool) -> GatewayConfig | None:
    from spork_cli.cli.params import load

    if not required and not path.exists():
        return None
    return load(path)


def _unreadable(exc: TokenRejected) -> UsageError:
    """The one line for a token that cannot be decoded, saying "not a JWT" once."""
    reason = exc.reason
    return UsageError(reason if reason.startswith("not a JWT") else f"not a JWT: {reason}")


def _read_token(token: str) -> str:
    if token == "-":
        token = sys.stdin.read()
    token = token.strip()
    if not token:
        raise UsageError("no token given")
    return token


def _duration(text: str) -> float:
    from spork_cli.config.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


@token_app.command("mint", cls=Command)
def mint(
    ctx: typer.Context,
    sub: Annotated[
        str | None, typer.Option("--sub", metavar="SUBJECT", help="Subject (user id).")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", metavar="ROLE", help="A role (repeatable).")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", metavar="SCOPE", help="A scope (repeatable)."),
    ] = None,
    claim: Annotated[
        list[str] | None,
        typer.Option(
            "--claim", metavar="NAME=VALUE", help="Extra claim (JSON values too; repeatable)."
        ),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", metavar="DURATION", help="Lifetime, e.g. 15m, 1h.")
    ] = "15m",
    aud: Annotated[
        str | None,
        typer.Option("--aud", metavar="AUDIENCE", help="Audience (default: config)."),
    ] = None,
    iss: Annotated[
        str | None, typer.Option("--iss", metavar="ISSUER", help="Issuer (default: config).")
    ] = None,
    kid: Annotated[
        str | None, typer.Option("--kid", metavar="KID", help="Key id for the header.")
    ] = None,
    alg: Annotated[
        str | None, typer.Option("--alg", metavar="ALG", help="Algorithm (default: config).")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="FILE", help="Private key PEM to sign with."),
    ] = None,
    secret: Annotated[
        str | None, typer.Option("--secret", metavar="SECRET", help="HMAC secret to sign with.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print token and claims.")] = False,
    config_option: ConfigOption = None,
) -> None:
    """Sign a token the gateway accepts (stdout is the bare token)."""
    from spork_cli.auth import mint as minting

    path = config_file(ctx, config_option)
    config = _config(path, required=key is None and secret is None)
    auth = config.auth if config is not None else None
    if config is not None and auth is None and key is None and secret is None:
        raise UsageError(f"{path} has no [auth] section; pass --secret or --key")
    extra = dict(minting.parse_claim(c) for c in claim or [])
    base = path.resolve().parent
    signing = minting.signing_key(auth, base, alg=alg, key_file=key, secret=secret, kid=kid)
    claims = minting.build_claims(
        auth,
        sub=sub,
        roles=role or [],
        scopes=scope or [],
        claims=extra,
        ttl=_duration(ttl),
        issuer=iss,
        audience=aud,
    )
    token = minting.sign(claims, signing)
    if as_json:
        typer.echo(json.dumps({"token": token, "alg": signing.alg, "claims": claims}, indent=2))
    else:
        typer.echo(token)


@token_app.command("inspect", cls=Command)
def inspect(token: TokenArg, as_json: JsonOption = False) -> None:
    """Decode a token WITHOUT verifying it: header, claims, human times."""
    from spork_cli.auth import TokenRejected
    from spork_cli.auth.explain import inspect as decode

    try:
        info = decode(_read_token(token))
    except TokenRejected as exc:
        raise _unreadable(exc) from exc
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['notice']}")
    typer.echo("header: " + json.dumps(info["header"]))
    typer.echo("claims:")
    for name, value in info["claims"].items():
        when = info["times"].get(name)
        shown = json.dumps(value)
        if when is not None:
            shown += f"  ({when['human']}" + (f", {when['utc']})" if when["utc"] else ")")
        typer.echo(f"  {name}: {shown}")


@token_app.command("verify", cls=Command)
def verify(
    ctx: typer.Context,
    token: TokenArg,
    route: Annotated[
        str | None,
        typer.Option(
            "--route",
            metavar="/PATH",
            help="Check the roles and scopes of the route of this request path.",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", metavar="METHOD", help="Method for --route.")
    ] = "GET",
    as_json: JsonOption = False,
    config_option: ConfigOption = None,
) -> None:
    """Verify a token as the gateway would; every check is shown. Exit 1 when rejected."""
    import asyncio

    path = config_file(ctx, config_option)
    config = _config(path, required=True)
    assert config is not None
    if config.auth is None:
        raise UsageError(f"{path} has no [auth] section: nothing to verify against")
    from spork_cli.auth.explain import accepted

    checks = asyncio.run(_verify(config, path, _read_token(token), route, method.upper()))
    ok = accepted(checks)
    if as_json:
        rows = [{"check": c.check, "ok": c.ok, "detail": c.detail} for c in checks]
        typer.echo(json.dumps({"accepted": ok, "checks": rows}, indent=2))
    else:
        for c in checks:
            mark = "--  " if c.ok is None else "ok  " if c.ok else "FAIL"
            typer.echo(f"{mark}  {c.check:<10} {c.detail}")
        typer.echo("accepted" if ok else "rejected")
    if not ok:
        raise typer.Exit(1)


async def _verify(
    config: GatewayConfig, path: Path, token: str, route_path: str | None, method: str
) -> list[Any]:
    from spork_cli.auth.explain import Check, explain_checks
    from spork_cli.auth.jwks import JwksCache
    from spork_cli.auth.verify import Verifier

    auth = config.auth
    assert auth is not None
    route = None
    if route_path is not None:
        route = _route_for(config, route_path, method)
    jwks = JwksCache.from_config(auth) if auth.jwks_url else None
    if jwks is not None:
        await jwks.start()
    try:
        verifier = Verifier(auth, path.resolve().parent, jwks)
        revoked = await _revoked_in_store(config, token)
        checks = await explain_checks(
            token,
            verifier,
            roles=route.roles if route else (),
            roles_mode=route.roles_mode if route else "any",
            scopes=route.scopes if route else (),
            scopes_mode=route.scopes_mode if route else "all",
            revoked=revoked,
        )
    finally:
        if jwks is not None:
            await jwks.close()
    if route is not None and route.auth == "none":
        checks.append(Check("route", True, f"{route.path} does not ask for a token"))
    return list(checks)


def _route_for(config: GatewayConfig, path: str, method: str) -> Any:
    """The route the gateway would choose: the canonical form of ``path``, matched as the
    compiled table matches."""
    from spork_cli.gateway.canonical import BadPath, canonical_path
    from spork_cli.gateway.table import config_match

    server = config.server
    try:
        clean = canonical_path(
            path.split("?", 1)[0],
            merge_slashes=server.merge_slashes,
            keep_encoded_slashes=server.encoded_slashes == "keep",
        )
    except BadPath as exc:
        raise UsageError(f"the gateway refuses the path {path}: {exc}") from exc
    route = config_match(config, method, clean)
    if route is None:
        raise UsageError(f"no route matches {method} {path}")
    return route


async def _revoked_in_store(config: GatewayConfig, token: str) -> bool | None:
    """Redis state is asked directly; memory state through the running gateway, if any."""
    from spork_cli.auth.explain import unverified_claims
    from spork_cli.errors import StateError
    from spork_cli.state.open import store_from_config

    try:
        jti = unverified_claims(token).get("jti")
    except Exception:
        return None
    if not isinstance(jti, str):
        return None
    if config.state.backend != "redis":
        return await _revoked_via_admin(config, jti)
    store = store_from_config(config.state.model_copy(update={"timeout": 2.0}))
    try:
        return await store.is_revoked(jti)
    except StateError as exc:
        raise UsageError(f"cannot reach the state store: {exc}") from exc
    finally:
        await store.close()


@token_app.command("revoke", cls=Command)
def revoke(
    ctx: typer.Context,
    token: Annotated[
        str | None,
        typer.Argument(metavar="TOKEN", help="The token (or -): its jti and remaining life."),
    ] = None,
    jti: Annotated[
        str | None, typer.Option("--jti", metavar="JTI", help="Revoke this jti instead.")
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            "--ttl",
            metavar="DURATION",
            help="How long to deny (default: until exp, or 24h).",
        ),
    ] = None,
    config_option: ConfigOption = None,
) -> None:
    """Deny a token everywhere the gateway's state reaches."""
    import asyncio

    from spork_cli.auth.explain import unverified_claims

    path = config_file(ctx, config_option)
    config = _config(path, required=True)
    assert config is not None
    seconds = _duration(ttl) if ttl is not None else None
    if token is not None:
        from spork_cli.auth import TokenRejected

        try:
            claims = unverified_claims(_read_token(token))
        except TokenRejected as exc:
            raise _unreadable(exc) from exc
        jti = claims.get("jti") if jti is None else jti
        exp = claims.get("exp")
        if seconds is None and isinstance(exp, int | float):
            seconds = float(exp) - time.time()
            if seconds <= 0:
                typer.echo("the token has expired already: nothing to revoke")
                return
    if not isinstance(jti, str) or not jti:
        raise UsageError("no jti: the token carries none; pass --jti")
    seconds = seconds if seconds is not None else 24 * 3600.0
    where = asyncio.run(_revoke(config, jti, seconds))
    typer.echo(f"revoked {jti} for {_human(seconds)} ({where})")


async def _revoke(config: GatewayConfig, jti: str, seconds: float) -> str:
    from spork_cli.errors import StateError

    if config.state.backend == "redis":
        from spork_cli.state.open import store_from_config

        store = store_from_config(config.state.model_copy(update={"timeout": 2.0}))
        try:
            await store.revoke(jti, seconds)
        except StateError as exc:
            raise UsageError(f"cannot reach the state store: {exc}") from exc
        finally:
            await store.close()
        return f"in {config.state.url}"
    return await _revoke_via_admin(config, jti, seconds)


def _admin(config: GatewayConfig) -> tuple[str, dict[str, str]]:
    host = config.admin.host if config.admin.host not in ("0.0.0.0", "::") else "127.0.0.1"
    headers = {}
    if config.admin.token is not None:
        headers["Authorization"] = f"Bearer {config.admin.token.get_secret_value()}"
    return f"http://{host}:{config.admin.port}", headers


async def _revoked_via_admin(config: GatewayConfig, jti: str) -> bool | None:
    """None when no gateway answers: then nobody holds memory state to check."""
    import aiohttp

    base, headers = _admin(config)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(
                f"{base}/api/revocations", params={"jti": jti}, headers=headers
            ) as response,
        ):
            if response.status != 200:
                detail = (await response.text())[:200]
                raise UsageError(
                    f"the gateway could not check the revocation: {response.status} {detail}"
                )
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return bool(body.get("revoked"))


async def _revoke_via_admin(config: GatewayConfig, jti: str, seconds: float) -> str:
    import aiohttp

    base, headers = _admin(config)
    url = f"{base}/api/revocations"
    host = base.removeprefix("http://")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.post(url, json={"jti": jti, "ttl": seconds}, headers=headers) as response,
        ):
            if response.status != 200:
                detail = (await response.text())[:200]
                raise UsageError(f"the gateway refused: {response.status} {detail}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UsageError(
            f"cannot reach the running gateway's admin API at {url} (memory state lives in "
            "the gateway process; is `spork serve` running?)"
        ) from exc
    return f"through the gateway at {host}"


def _human(seconds: float) -> str:
    from spork_cli.auth.claims import human_duration

    return human_duration(seconds)


@token_app.command("keygen", cls=Command)
def keygen(
    ctx: typer.Context,
    alg: Annotated[
        str, typer.Option("--alg", metavar="ALG", help="HS256, RS256, ES256, EdDSA, ...")
    ] = "ES256",
    out: Annotated[
        Path, typer.Option("-o", "--out", metavar="DIR", help="Directory to write to.")
    ] = Path("keys"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing keys.")] = False,
    config_option: ConfigOption = None,
) -> None:
    """Generate a key (private key mode 0600) and print the config lines that use it, with
    paths relative to the -c file's directory."""
    from spork_cli.auth.keygen import keygen as generate

    config_dir = config_file(ctx, config_option).resolve().parent
    made = generate(alg, out, config_dir=config_dir, overwrite=force)
    for file in made.files:
        typer.echo(f"wrote {file}")
    typer.echo("\nadd to gateway.toml:\n")
    for line in made.config_lines:
        typer.echo(line)
