"""The HTTP server as an OAuth 2.1 resource server: JWT access tokens checked against the
identity provider's key set, the caller named by a claim, RFC 9728 metadata, 401s that say why.

The identity provider is :mod:`tests.support.oauth`: keys generated here, a JWKS on loopback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mcp_server import Settings
from mcp_server.__main__ import cli
from mcp_server._auth import (
    Authenticator,
    KeySet,
    OAuth,
    TokenRefused,
    authenticator,
)
from mcp_server._http import http_app
from tests.support.fakes import KEY
from tests.support.identity import INITIALIZE, MCP_HEADERS, whoami, whoami_server
from tests.support.oauth import (
    AUDIENCE,
    ISSUER,
    JWKSServer,
    SigningKey,
    ec_key,
    ed_key,
    hs256_with,
    jwks_server,
    rsa_key,
    tampered,
    token,
    unsigned,
)

METADATA = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"rsa": rsa_key(), "ec": ec_key(), "ed": ed_key(), "other": rsa_key("rsa-2")}


@pytest.fixture
def idp(keys: dict[str, SigningKey]) -> Iterator[JWKSServer]:
    with jwks_server(keys["rsa"], keys["ec"], keys["ed"]) as server:
        yield server


def _settings(idp: JWKSServer, **more: Any) -> Settings:
    return Settings(
        api_key=KEY,
        preview="off",
        public_url=AUDIENCE,
        oauth_issuer=ISSUER,
        oauth_jwks_url=idp.url,
        **more,
    )


async def _ready(settings: Settings) -> Authenticator:
    verifier = authenticator(settings)
    assert verifier is not None
    await verifier.prepare()
    return verifier


@contextlib.asynccontextmanager
async def _served(idp: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app with OAuth, in process, and a plain client for raw requests (the app's
    lifespan runs in this task: anyio's cancel scopes must be left where entered)."""
    settings = _settings(idp)
    server = whoami_server(settings)
    app = http_app(server, settings, authenticator=await _ready(settings))
    async with (
        server.session_manager.run(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        yield http


async def test_tokens_signed_with_each_kind_of_key_are_accepted(
    idp: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    verifier = await _ready(_settings(idp))
    for kind in ("rsa", "ec", "ed"):
        signed = token(keys[kind], sub=f"user-{kind}")
        access = await verifier.authenticate(signed)
        assert access.client_id == f"user-{kind}"
        assert access.claims is not None
        assert access.claims["mai_principal"] == f"user-{kind}"
        assert access.subject == f"user-{kind}"
        assert access.expires_at is not None
        # The access token keeps a fingerprint, never the JWT (it may be logged downstream).
        assert signed not in repr(access)
        assert signed.split(".")[2] not in access.model_dump_json()
    assert idp.reads == 1  # the key set was read once, at start


def _bad_tokens(keys: dict[str, SigningKey]) -> list[tuple[str, str, str]]:
    rsa = keys["rsa"]
    return [
        ("expired", token(rsa, exp=1_000_000, iat=999_000), "expired"),
        ("wrong audience", token(rsa, aud="https://other.example.test/mcp"), "another audience"),
        ("wrong issuer", token(rsa, iss="https://evil.example.test/"), "another issuer"),
        ("alg none", unsigned(), "algorithm is not accepted"),
        ("HS256 keyed with the public key", hs256_with(rsa.public_pem()), "not accepted"),
        ("unknown kid", token(keys["other"]), "not signed with a key"),
        ("tampered", tampered(token(rsa), sub="user-admin"), "signature does not verify"),
        ("no sub claim", token(rsa, sub=None), "no usable 'sub' claim"),
        ("sub with a line break", token(rsa, sub="eve\nINFO forged"), "no usable 'sub' claim"),
        ("not yet valid", token(rsa, nbf=4_000_000_000), "not valid yet"),
        ("no exp", token(rsa, exp=None), "lacks a required claim"),
        ("kid of an RSA key, signed EC", token(keys["ec"], kid="rsa-1"), "does not match"),
        ("not a JWT", "a.b.c", "not valid for this server"),
    ]


async def test_bad_tokens_get_401_with_the_reason_and_the_metadata_url(
    idp: JWKSServer, keys: dict[str, SigningKey], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_server")
    responses = []
    async with _served(idp) as http:
        for _, bad, _ in _bad_tokens(keys):
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {bad}"}
            responses.append(await http.post("/mcp", json=INITIALIZE, headers=headers))
    for (case, bad, says), response in zip(_bad_tokens(keys), responses, strict=True):
        challenge = response.headers["www-authenticate"]
        assert response.status_code == 401, case
        assert challenge.startswith("Bearer "), case
        assert 'error="invalid_token"' in challenge, case
        assert f'resource_metadata="{METADATA}"' in challenge, case
        assert says in response.json()["error_description"], (case, response.json())
        assert bad not in response.text + challenge
    logged = [r.getMessage() for r in caplog.records if "refused an HTTP request" in r.message]
    assert len(logged) == len(_bad_tokens(keys))
    assert all("127.0.0.1:" in line for line in logged)  # who was refused, and why
    for _, bad, _ in _bad_tokens(keys):
        signature = bad.split(".")[2]
        assert not any(bad in line or (len(signature) > 8 and signature in line) for line in logged)


async def test_no_token_401_points_at_the_metadata_which_is_served_without_auth(
    idp: JWKSServer,
) -> None:
    async with _served(idp) as http:
        bare = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        document = await http.get("/.well-known/oauth-protected-resource/mcp")
        neighbours = [
            await http.get("/.well-known/oauth-protected-resource"),
            await http.get("/.well-known/other"),
        ]
    assert bare.status_code == 401
    assert f'resource_metadata="{METADATA}"' in bare.headers["www-authenticate"]
    assert "Authorization: Bearer" in bare.json()["error_description"]
    assert document.status_code == 200
    body = document.json()
    assert body["resource"] == AUDIENCE
    assert body["authorization_servers"] == [ISSUER]
    assert body["bearer_methods_supported"] == ["header"]
    # Only that document is open: its neighbours are not.
    assert [r.status_code for r in neighbours] == [401, 401]


async def test_two_oauth_callers_are_two_principals_to_the_sdk_client(
    idp: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    settings = _settings(idp)
    server = whoami_server(settings)
    app = http_app(server, settings, authenticator=await _ready(settings))
    async with server.session_manager.run():
        alice = await whoami(app, token(keys["rsa"], sub="user-alice"))
        bob = await whoami(app, token(keys["ec"], sub="user-bob"))
    assert (alice, bob) == ("user-alice", "user-bob")
    by_email = _settings(idp, oauth_principal_claim="email")
    server = whoami_server(by_email)
    app = http_app(server, by_email, authenticator=await _ready(by_email))
    async with server.session_manager.run():
        named = await whoami(app, token(keys["ed"], email="carol@example.test"))
    assert named == "carol@example.test"


async def test_an_unknown_kid_reads_the_key_set_again_at_most_every_30_seconds(
    keys: dict[str, SigningKey],
) -> None:
    """A rotated key is accepted once it is in the set; made-up kids cost one read per 30 s.
    The clock is the test's."""
    now = [1000.0]
    with jwks_server(keys["rsa"]) as idp:
        keyset = KeySet(idp.url, clock=lambda: now[0])
        verifier = Authenticator(
            oauth=OAuth(
                issuer=ISSUER, audience=AUDIENCE, claim="sub", resource=AUDIENCE, keys=keyset
            )
        )
        await verifier.prepare()
        rotated = token(keys["other"], sub="user-rotated")
        now[0] += 100
        with pytest.raises(TokenRefused, match="not signed with a key"):
            await verifier.authenticate(rotated)  # unknown: read again, still unknown
        assert idp.reads == 2
        for n in range(20):  # junk kids within the interval: no read at all
            now[0] += 1
            with pytest.raises(TokenRefused):
                await verifier.authenticate(token(keys["other"], kid=f"junk-{n}"))
        assert idp.reads == 2
        idp.keys.append(keys["other"])  # the provider rotates
        now[0] += 10  # 30 s after the last read
        access = await verifier.authenticate(rotated)
        assert access.client_id == "user-rotated"
        assert idp.reads == 3
        assert (await verifier.authenticate(token(keys["rsa"]))).client_id == "user-alice"
        assert idp.reads == 3  # known keys cost no read


async def test_the_key_set_is_read_again_when_old_and_a_failed_read_keeps_the_keys(
    keys: dict[str, SigningKey],
) -> None:
    now = [0.0]
    with jwks_server(keys["rsa"]) as idp:
        keyset = KeySet(idp.url, clock=lambda: now[0], max_age=3600)
        await keyset.load()
        now[0] += 3601
        idp.status = 503
        assert await keyset.key("rsa-1") is not None  # the provider is down: old keys kept
        assert idp.reads == 2
        idp.status = 200
        idp.keys = [keys["other"]]  # "rsa-1" withdrawn
        now[0] += 31
        assert await keyset.key("rsa-1") is None
        assert await keyset.key("rsa-2") is not None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
def test_a_key_set_that_is_down_or_invalid_stops_the_server_at_start(
    keys: dict[str, SigningKey], tmp_path: Path
) -> None:
    runner = CliRunner()
    book = str(tmp_path / "jobs.sqlite3")
    base = ["--transport", "streamable-http", "--host", "0.0.0.0", "--job-book", book]  # noqa: S104
    oauth = ["--oauth-issuer", ISSUER, "--public-url", AUDIENCE]
    down = f"http://127.0.0.1:{_closed_port()}/jwks"
    result = runner.invoke(cli, [*base, *oauth, "--oauth-jwks-url", down])
    assert result.exit_code == 2, result.output
    assert f"Cannot use the OAuth key set (JWKS) at {down}" in result.output
    assert "could not be fetched" in result.output
    with jwks_server(keys["rsa"]) as idp:
        for status, body, says in [
            (500, None, "answered HTTP 500"),
            (200, b"<html>", "is not JSON"),
            (200, b'{"keys": []}', "no usable signing key"),
            (200, b'{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}', "no usable"),
        ]:
            idp.status, idp.body = status, body
            result = runner.invoke(cli, [*base, *oauth, "--oauth-jwks-url", idp.url])
            assert result.exit_code == 2, result.output
            assert says in result.output
            assert "The server did not start" in result.output
        incomplete = runner.invoke(cli, [*base, "--oauth-jwks-url", idp.url])
    assert incomplete.exit_code == 2
    assert "OAuth needs --oauth-issuer / MAI_MCP_OAUTH_ISSUER and --public-url" in (
        incomplete.output
    )
    plain_http = runner.invoke(cli, [*base, "--oauth-issuer", "http://idp.example.test/"])
    assert plain_http.exit_code == 2
    assert "--oauth-issuer: give an https:// URL" in plain_http.output
