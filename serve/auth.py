"""The API token of the HTTP apps (REST API and /v2 inference): who may call which route.

With ``serve.api_token`` set, a request carries ``Authorization: Bearer <token>``;
:func:`access_for` is the one rule of what stays open without it.  Without a token
the apps are open, which :func:`clara_ray.serving.check_bind` allows on loopback only.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from enum import Enum
from typing import Any
from urllib.parse import parse_qs

from pydantic import SecretStr

__all__ = ["UNAUTHORIZED", "Access", "BearerAuth", "access_for", "scope_allowed", "token_matches"]

UNAUTHORIZED = "missing or wrong API token"
"""The message of a 401 answer."""

_OPEN = frozenset(
    {
        "/",
        "/api/v1/health",
        "/api/docs",
        "/api/openapi.json",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
_QUERY_TOKEN = frozenset({("GET", "/api/v1/events")})


class Access(Enum):
    """What a request must show to reach a route."""

    OPEN = "open"
    """Nothing: health checks, and the pages a browser loads before it can ask for the token
    (the dashboard at ``/``, ``/static/*``, the OpenAPI page)."""
    HEADER = "header"
    """The token in ``Authorization: Bearer``."""
    HEADER_OR_QUERY = "header or query"
    """The header, or ``?access_token=``: the event stream, which a browser's EventSource
    opens without headers."""


def access_for(method: str, path: str) -> Access:
    """What a request for ``path`` (the full URL path, decoded) must show."""
    if path in _OPEN or path.startswith("/static/"):
        return Access.OPEN
    if (method.upper(), path) in _QUERY_TOKEN:
        return Access.HEADER_OR_QUERY
    return Access.HEADER


def token_matches(expected: SecretStr, given: str | None) -> bool:
    """Whether ``given`` is the token, compared in constant time."""
    if given is None:
        return False
    return hmac.compare_digest(expected.get_secret_value().encode(), given.encode())


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
    return None


def _query_token(query_string: bytes) -> str | None:
    values = parse_qs(query_string.decode("latin-1")).get("access_token")
    return values[-1] if values else None


class BearerAuth:
    """ASGI middleware: answers 401 (``WWW-Authenticate: Bearer``) to a request without
    the token where :func:`access_for` asks for one.

    Args:
        app: the ASGI app behind it.
        token: returns the configured token (None: every route is open); called per
            request, so an app built before its replica knows the token can use it.
        error_key: the key of the JSON error body (``detail`` on the REST API, ``error``
            on KServe v2).
    """

    def __init__(
        self, app: Any, token: Callable[[], SecretStr | None], error_key: str = "detail"
    ) -> None:
        self.app = app
        self.token = token
        self.error_key = error_key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({self.error_key: UNAUTHORIZED}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Any) -> bool:
        return scope_allowed(scope, self.token())


def scope_allowed(scope: Any, expected: SecretStr | None) -> bool:
    """Whether the ASGI request ``scope`` may reach its route when the token is ``expected``."""
    if expected is None:
        return True
    root, path = scope.get("root_path", ""), scope.get("path", "")
    full = path if path.startswith(root) else root + path
    access = access_for(scope.get("method", "GET"), full)
    if access is Access.OPEN:
        return True
    if token_matches(expected, _bearer(scope.get("headers", []))):
        return True
    return access is Access.HEADER_OR_QUERY and token_matches(
        expected, _query_token(scope.get("query_string", b""))
    )
