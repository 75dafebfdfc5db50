"""The API's token rule, its middleware, the bind check and the token setting (no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from clara_ray.config.settings import load_settings
from clara_ray.errors import ConfigError
from clara_ray.serving import check_bind, deploy_api, is_loopback
from serve.auth import Access, BearerAuth, access_for, token_matches

TOKEN = "s3cret-token-0123456789"
REFUSAL = r"key 'serve.host' is '0\.0\.0\.0'.*Orthanc.*serve\.api_token.*CLARA_RAY_SERVE__API_TOKEN"


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("GET", "/api/v1/health", Access.OPEN),
        ("GET", "/", Access.OPEN),
        ("GET", "/static/app.js", Access.OPEN),
        ("GET", "/api/docs", Access.OPEN),
        ("GET", "/api/openapi.json", Access.OPEN),
        ("GET", "/v2/health/live", Access.OPEN),
        ("GET", "/v2/health/ready", Access.OPEN),
        ("GET", "/api/v1/events", Access.HEADER_OR_QUERY),
        ("POST", "/api/v1/events", Access.HEADER),
        ("GET", "/api/v1/health/", Access.HEADER),
        ("GET", "/api/v1/healthz", Access.HEADER),
        ("GET", "/api/v1/jobs", Access.HEADER),
        ("GET", "/api/v1/jobs/x/results/a.dcm", Access.HEADER),
        ("GET", "/v2", Access.HEADER),
        ("POST", "/v2/models/m/infer", Access.HEADER),
        ("GET", "/v2/health/live/x", Access.HEADER),
    ],
)
def test_access_rule(method: str, path: str, access: Access) -> None:
    assert access_for(method, path) is access


def test_token_matches() -> None:
    secret = SecretStr(TOKEN)
    assert token_matches(secret, TOKEN)
    assert not token_matches(secret, TOKEN + "x")
    assert not token_matches(secret, "")
    assert not token_matches(secret, None)


class _Client:
    """GETs against the middleware in front of a Starlette app, over httpx's ASGI transport."""

    def __init__(self, token: str | None) -> None:
        async def ok(_request: object) -> PlainTextResponse:
            return PlainTextResponse("ok")

        paths = ("/api/v1/health", "/api/v1/jobs", "/api/v1/events", "/")
        secret = SecretStr(token) if token else None
        self.app = BearerAuth(Starlette(routes=[Route(p, ok) for p in paths]), lambda: secret)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.get(path, **kwargs)

        return asyncio.run(call())


def _client(token: str | None) -> _Client:
    return _Client(token)


def test_middleware_asks_for_the_token() -> None:
    client = _client(TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = client.get("/api/v1/jobs", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {"detail": "missing or wrong API token"}
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).text == "ok"
    assert client.get("/api/v1/jobs", headers={"authorization": f"bearer {TOKEN}"}).text == "ok"
    assert client.get("/api/v1/health").text == "ok"
    assert client.get("/").text == "ok"


def test_query_token_only_for_the_event_stream() -> None:
    client = _client(TOKEN)
    assert client.get("/api/v1/events", params={"access_token": TOKEN}).text == "ok"
    assert client.get("/api/v1/events", params={"access_token": "wrong"}).status_code == 401
    assert client.get("/api/v1/jobs", params={"access_token": TOKEN}).status_code == 401


def test_middleware_without_a_token_is_open() -> None:
    assert _client(None).get("/api/v1/jobs").text == "ok"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("fe80::1", False),
        ("clara.hospital.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_bind_needs_a_token() -> None:
    check_bind(load_settings(env={}).serve)
    remote = load_settings(env={"CLARA_RAY_SERVE__HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match=REFUSAL):
        check_bind(remote.serve)
    check_bind(
        load_settings(
            env={"CLARA_RAY_SERVE__HOST": "0.0.0.0", "CLARA_RAY_SERVE__API_TOKEN": TOKEN}
        ).serve
    )


def test_deploy_api_refuses_before_starting_serve() -> None:
    with pytest.raises(ConfigError, match=REFUSAL):
        deploy_api(load_settings(env={"CLARA_RAY_SERVE__HOST": "0.0.0.0"}))


def test_serve_builder_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve.api import build_app

    remote = load_settings(env={"CLARA_RAY_SERVE__HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match=REFUSAL):
        build_app({"settings": remote.model_dump(mode="json")})
    monkeypatch.setenv("CLARA_RAY_SERVE__HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match=REFUSAL):
        build_app({})
    monkeypatch.setenv("CLARA_RAY_SERVE__API_TOKEN", TOKEN)
    assert type(build_app({})).__name__ == "Application"


def test_token_setting() -> None:
    settings = load_settings(env={"CLARA_RAY_SERVE__API_TOKEN": TOKEN})
    assert settings.serve.api_token is not None
    assert settings.serve.api_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump(mode="json"))
    assert load_settings(env={}).serve.api_token is None
    assert load_settings(env={"CLARA_RAY_SERVE__API_TOKEN": ""}).serve.api_token is None
    with pytest.raises(ConfigError, match=r"key 'serve\.api_token'.*at least 16"):
        load_settings(env={"CLARA_RAY_SERVE__API_TOKEN": "short"})
    with pytest.raises(ConfigError, match=r"key 'serve\.max_upload_mb'"):
        load_settings(env={"CLARA_RAY_SERVE__MAX_UPLOAD_MB": "0"})
    assert load_settings(env={}).serve.max_upload_mb == 2048


def test_ingress_env_turns_on_haproxy_only_when_asked() -> None:
    """serve.ingress picks the environment Ray's processes start with: nothing for Serve's
    own proxy; Ray's HAProxy and throughput settings, with HAProxy's files (its admin socket
    nested one hash folder deeper) at a path short enough for a Unix socket, per port."""
    from clara_ray.config.settings import ServeSettings
    from clara_ray.serving import ingress_env

    assert ingress_env(ServeSettings()) == {}
    env = ingress_env(ServeSettings(ingress="haproxy", port=18000))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert "clara-haproxy-18000" in env["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    assert len(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]) + 57 < 108
    assert ingress_env(ServeSettings(ingress="haproxy", port=18001)) != env
    with pytest.raises(ValueError, match="ingress"):
        ServeSettings(ingress="nginx")
