"""JWT auth for a route: 401 without a valid token (when required), 403 without the roles or
scopes the route asks for. The identity is stored on the request for the proxy to forward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from spork_cli.auth import TokenRejected
from spork_cli.auth.claims import Identity, missing
from spork_cli.auth.verify import extract_token
from spork_cli.gateway.keys import IDENTITY
from spork_cli.middleware import Handler, Middleware
from spork_cli.problems import HTTPProblem

if TYPE_CHECKING:
    from spork_cli.auth.verify import Verifier
    from spork_cli.config.model import Auth, Route

EMPTY: dict[str, str] = {}


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    """RFC 6750 section 3: the WWW-Authenticate header of a Bearer-protected resource."""
    value = 'Bearer realm="spork"'
    if error:
        value += f', error="{error}"'
    if description:
        safe = description.replace("\\", "").replace('"', "'")
        value += f', error_description="{safe}"'
    return {"WWW-Authenticate": value}


def auth_middleware(route: Route, auth: Auth, verifier: Verifier) -> Middleware:
    required = route.auth == "required"
    needs_grant = bool(route.roles or route.scopes)
    wants_cookie = auth.cookie is not None
    wants_query = auth.query_param is not None

    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = extract_token(
            request.headers,
            request.cookies if wants_cookie else EMPTY,
            request.query if wants_query else EMPTY,
            auth,
        )
        if token is None:
            if required or needs_grant:
                raise HTTPProblem(
                    401,
                    "token-required",
                    "this route needs a bearer token",
                    headers=_challenge(),
                )
            return await handler(request)
        try:
            identity = await verifier.verify(token)
        except TokenRejected as exc:
            raise HTTPProblem(
                401,
                "invalid-token",
                f"the token was rejected: {exc.reason}",
                headers=_challenge("invalid_token", exc.reason),
                extra={"reason": exc.code},
            ) from None
        if needs_grant:
            _authorize(route, identity)
        request[IDENTITY] = identity
        return await handler(request)

    return authenticate


def _authorize(route: Route, identity: Identity) -> None:
    lacking_roles = missing(route.roles, identity.roles, route.roles_mode)
    if lacking_roles:
        words = ", ".join(lacking_roles)
        raise HTTPProblem(
            403,
            "missing-role",
            f"this route needs the role{'s' if len(lacking_roles) > 1 else ''} {words}"
            + (" (any one)" if route.roles_mode == "any" and len(lacking_roles) > 1 else ""),
            extra={"missing_roles": lacking_roles},
        )
    lacking_scopes = missing(route.scopes, identity.scopes, route.scopes_mode)
    if lacking_scopes:
        words = " ".join(lacking_scopes)
        raise HTTPProblem(
            403,
            "insufficient-scope",
            f"this route needs the scope{'s' if len(lacking_scopes) > 1 else ''} {words}",
            headers=_challenge("insufficient_scope", f"needs {words}"),
            extra={"missing_scopes": lacking_scopes},
        )
