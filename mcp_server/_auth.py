"""Who is calling the HTTP server: a principal (a name) on every authenticated request.

Three ways to authenticate, any of them together, all through one :class:`Authenticator` (the
MCP SDK's ``TokenVerifier``):

- the single ``--auth-token``: principal ``"default"``;
- named tokens (``--tokens-file``, :mod:`mcp_server._tokens`): the token's name;
- OAuth 2.1 access tokens (``--oauth-issuer`` ...): JWTs signed by the identity provider,
  checked against its key set (:class:`KeySet`); the principal is a claim (``sub`` by default).

:func:`protect` composes the SDK's pieces around the app: Starlette's
``AuthenticationMiddleware`` with a :class:`BearerBackend` (the SDK's ``BearerAuthBackend``,
stricter), then the SDK's ``RequireAuthMiddleware`` and ``AuthContextMiddleware``. An
authenticated request carries an ``AuthenticatedUser`` in ``scope["user"]`` whose
``access_token.claims["mai_principal"]`` is the principal; a refused one gets 401 with the reason
and (with OAuth) the ``resource_metadata`` URL of the RFC 9728 document served next to ``/mcp``.

No token, digest input or JWT is kept in an ``AccessToken`` (its ``token`` is a fingerprint),
a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import httpx
import jwt
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    BearerAuthBackend,
    RequireAuthMiddleware,
)
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl
from starlette.authentication import AuthCredentials, AuthenticationError
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ._tokens import NamedTokens, TokensFileError

if TYPE_CHECKING:
    from ._settings import Settings

logger = logging.getLogger("mcp_server")

REALM = "mai-image-mcp"
STATIC_PRINCIPAL = "default"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""Signatures accepted on access tokens (and EdDSA): asymmetric only, never ``none`` or HS*,
whose "key" would be the identity provider's public key, known to anyone."""
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
LEEWAY = 30.0
"""Seconds of clock difference with the identity provider tolerated on ``exp`` and ``nbf``."""
REFRESH_INTERVAL = 30.0
"""Least seconds between two reads of the key set for unknown ``kid`` values: tokens naming
made-up keys cannot make the server hammer the identity provider."""
MAX_KEY_SET_AGE = 3600.0
"""The key set is read again after this long, so a key the provider withdrew stops working."""
MAX_TOKEN_CHARS = 8192
MAX_KEY_SET_BYTES = 1024 * 1024
_FLAGS = {
    "public_url": "--public-url / MAI_MCP_PUBLIC_URL",
    "oauth_issuer": "--oauth-issuer / MAI_MCP_OAUTH_ISSUER",
    "oauth_jwks_url": "--oauth-jwks-url / MAI_MCP_OAUTH_JWKS_URL",
    "tokens_file": "--tokens-file / MAI_MCP_TOKENS_FILE",
}


class AuthSetupError(Exception):
    """The server's authentication cannot be set up (a start-up error, in words)."""


class TokenRefused(Exception):
    """A bearer token was refused; the message is the reason (it never quotes the token)."""


def configured(settings: Settings) -> bool:
    """True if the settings ask for any authentication on the HTTP server."""
    return any(
        value is not None
        for value in (
            settings.auth_token,
            settings.tokens_file,
            settings.oauth_issuer,
            settings.oauth_jwks_url,
            settings.oauth_audience,
        )
    )


def fingerprint(token: str) -> str:
    """What an ``AccessToken`` keeps instead of the token: enough to tell two apart."""
    return "sha256:" + hashlib.sha256(b"mai-fingerprint\0" + token.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- OAuth: the key set


@dataclass(frozen=True)
class _Key:
    kty: str  # RSA, EC or OKP
    alg: str | None  # the one algorithm the provider declared for it, if it did
    key: jwt.PyJWK


class KeySet:
    """The identity provider's JSON Web Key Set, fetched with httpx and cached.

    :meth:`load` reads it (at start: a provider that is down stops the server). A ``kid`` not in
    the set makes it read again, at most once per ``min_interval`` seconds (concurrent requests
    wait for the same read); a set older than ``max_age`` is read again on the next request
    (a failed read then keeps the old keys). ``transport`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = REFRESH_INTERVAL,
        max_age: float = MAX_KEY_SET_AGE,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._http_transport = transport
        self._clock = clock
        self._min_interval = min_interval
        self._max_age = max_age
        self._timeout = timeout
        self._keys: dict[str, _Key] = {}  # kid -> (kty, key)
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        self._pending: asyncio.Task[None] | None = None
        self.reads = 0

    def __repr__(self) -> str:
        return f"KeySet({self.url!r}, {len(self._keys)} keys)"

    async def load(self) -> None:
        """Read the key set now. Raises :class:`AuthSetupError` if it cannot be used."""
        self._tried_at = self._clock()
        try:
            self._keep(await self._fetch())
        except ValueError as exc:
            raise AuthSetupError(
                f"Cannot use the OAuth key set (JWKS) at {self.url} ({_FLAGS['oauth_jwks_url']}):"
                f" {exc}. Check the URL (the identity provider's jwks_uri) and that it is up."
            ) from None

    async def key(self, kid: str) -> _Key | None:
        """The key named ``kid``, reading the set again if that is allowed now."""
        now = self._clock()
        stale = now - self._fetched_at > self._max_age
        if (kid not in self._keys or stale) and (
            self._pending is not None or now - self._tried_at >= self._min_interval
        ):
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._pending is None:
            self._tried_at = self._clock()
            self._pending = asyncio.get_running_loop().create_task(self._read_again())
        task = self._pending
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._pending is task:
                self._pending = None

    async def _read_again(self) -> None:
        try:
            self._keep(await self._fetch())
        except ValueError as exc:
            logger.warning("cannot read the OAuth key set at %s again: %s", self.url, exc)

    def _keep(self, keys: dict[str, _Key]) -> None:
        self._keys = keys
        self._fetched_at = self._clock()

    async def _fetch(self) -> dict[str, _Key]:
        """The signing keys of the set, by ``kid``. ValueError says why there are none."""
        self.reads += 1
        try:
            async with httpx.AsyncClient(
                transport=self._http_transport, timeout=self._timeout, follow_redirects=False
            ) as http:
                response = await http.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ValueError(f"it could not be fetched ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ValueError(f"it answered HTTP {response.status_code}")
        if len(response.content) > MAX_KEY_SET_BYTES:
            raise ValueError("it is larger than 1 MiB")
        try:
            document = json.loads(response.content)
        except ValueError:
            raise ValueError("it is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError('it is not a JWK set (no "keys" list)')
        keys = {}
        for data in document["keys"]:
            usable = (
                isinstance(data, dict)
                and isinstance(data.get("kid"), str)
                and data.get("kty") in _KEY_TYPES.values()
                and data.get("use", "sig") == "sig"
            )
            if not usable:
                continue
            try:
                alg = data.get("alg") if isinstance(data.get("alg"), str) else None
                keys[data["kid"]] = _Key(data["kty"], alg, jwt.PyJWK(data))
            except jwt.PyJWTError:
                continue  # a key type or curve this PyJWT cannot use: not one to trust
        if not keys:
            raise ValueError("it holds no usable signing key (RSA, EC or OKP, with a kid)")
        return keys


# ---------------------------------------------------------------------- OAuth: the tokens


@dataclass(frozen=True)
class OAuth:
    """What an access token must be: from ``issuer``, for ``audience``, signed by a key of
    ``keys``; ``claim`` names the caller. ``resource`` is this server's public MCP URL."""

    issuer: str
    audience: str
    claim: str
    resource: str
    keys: KeySet

    @property
    def metadata_url(self) -> str:
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource)))

    def routes(self) -> Router:
        """The RFC 9728 protected-resource metadata document, from the SDK."""
        return Router(
            routes=create_protected_resource_routes(
                resource_url=AnyHttpUrl(self.resource),
                authorization_servers=[AnyHttpUrl(self.issuer)],
                resource_name=REALM,
            )
        )

    async def verify(self, token: str) -> AccessToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("The bearer token is not valid for this server.") from None
        algorithm = header.get("alg")
        if algorithm not in (*ALGORITHMS, "EdDSA"):
            raise TokenRefused(
                "The token's signing algorithm is not accepted (only asymmetric ones: "
                + ", ".join((*ALGORITHMS, "EdDSA"))
                + ")."
            )
        kid = header.get("kid")
        found = await self.keys.key(kid) if isinstance(kid, str) else None
        if found is None:
            raise TokenRefused(
                "The token was not signed with a key of the identity provider's key set."
            )
        if _KEY_TYPES[algorithm[:2]] != found.kty or found.alg not in (None, algorithm):
            raise TokenRefused("The token's algorithm does not match its key.")
        try:
            claims = jwt.decode(
                token,
                found.key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenRefused(_why(exc)) from None
        principal = claims.get(self.claim)
        if not (
            isinstance(principal, str)
            and principal.strip()
            and principal.isprintable()  # it goes into logs and records: no line breaks
            and len(principal) <= 256
        ):
            raise TokenRefused(
                f"The token has no usable '{self.claim}' claim, which names the caller on this "
                "server (--oauth-principal-claim)."
            )
        return AccessToken(
            token=fingerprint(token),
            client_id=principal,
            scopes=[],
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=claims.get("sub") if isinstance(claims.get("sub"), str) else None,
            claims={"mai_principal": principal, "mai_auth": "oauth", "iss": self.issuer},
        )


def _why(exc: jwt.PyJWTError) -> str:
    """A refusal's reason in words of our own (a library's message is not shown)."""
    reasons: list[tuple[type[jwt.PyJWTError], str]] = [
        (jwt.ExpiredSignatureError, "The token has expired."),
        (jwt.ImmatureSignatureError, "The token is not valid yet (nbf or iat)."),
        (jwt.InvalidAudienceError, "The token was issued for another audience."),
        (jwt.InvalidIssuerError, "The token is from another issuer."),
        (jwt.MissingRequiredClaimError, "The token lacks a required claim (exp, iss or aud)."),
        (jwt.InvalidSignatureError, "The token's signature does not verify."),
    ]
    return next((text for kind, text in reasons if isinstance(exc, kind)), _INVALID)


_INVALID = "The bearer token is not valid for this server."


# ---------------------------------------------------------------------- the verifier


class Authenticator:
    """The one ``TokenVerifier`` of the HTTP server: the static token, then named tokens (by
    digest), then OAuth access tokens. :meth:`authenticate` says why it refuses."""

    def __init__(
        self,
        *,
        static: str | None = None,
        named: NamedTokens | None = None,
        oauth: OAuth | None = None,
    ) -> None:
        self._static = None if static is None else static.encode("utf-8")
        self.named = named
        self.oauth = oauth

    def __repr__(self) -> str:
        modes = [
            *(["static token"] if self._static is not None else []),
            *([repr(self.named)] if self.named is not None else []),
            *([f"OAuth({self.oauth.issuer!r})"] if self.oauth is not None else []),
        ]
        return f"Authenticator({', '.join(modes)})"

    async def prepare(self) -> None:
        """Read the OAuth key set now (start-up: fail fast). Raises :class:`AuthSetupError`."""
        if self.oauth is not None:
            await self.oauth.keys.load()

    async def authenticate(self, token: str) -> AccessToken:
        """The access token for ``token``, or :class:`TokenRefused` with the reason."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRefused("The bearer token is too long.")
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return _access(token, STATIC_PRINCIPAL, "static")
        if self.named is not None:
            name = self.named.principal(token)
            if name is not None:
                return _access(token, name, "token")
        if self.oauth is not None and token.count(".") == 2:
            return await self.oauth.verify(token)
        raise TokenRefused(_INVALID)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The SDK's ``TokenVerifier`` protocol: the access token, or None if refused."""
        try:
            return await self.authenticate(token)
        except TokenRefused:
            return None


def _access(token: str, principal: str, how: str) -> AccessToken:
    return AccessToken(
        token=fingerprint(token),
        client_id=principal,
        scopes=[],
        subject=principal,
        claims={"mai_principal": principal, "mai_auth": how},
    )


def authenticator(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Authenticator | None:
    """The authenticator the settings ask for (None: no authentication), the tokens file read.

    Raises:
        AuthSetupError: a missing or malformed tokens file, or OAuth settings that are
            incomplete; the message names the flags and variables to fix.
    """
    if not configured(settings):
        return None
    named = None
    if settings.tokens_file is not None:
        try:
            named = NamedTokens(settings.tokens_file)
        except TokensFileError as exc:
            raise AuthSetupError(f"{exc} ({_FLAGS['tokens_file']})") from None
    oauth = None
    if any((settings.oauth_issuer, settings.oauth_jwks_url, settings.oauth_audience)):
        missing = [
            _FLAGS[name]
            for name in ("oauth_issuer", "oauth_jwks_url", "public_url")
            if getattr(settings, name) is None
        ]
        if missing:
            raise AuthSetupError(
                "OAuth needs " + " and ".join(missing) + ": the identity provider's issuer, "
                "its key set (jwks_uri), and the URL clients reach /mcp at (the resource the "
                "tokens are for, e.g. https://mcp.example.com/mcp)."
            )
        assert settings.oauth_issuer is not None
        assert settings.oauth_jwks_url is not None
        assert settings.public_url is not None
        oauth = OAuth(
            issuer=settings.oauth_issuer,
            audience=settings.oauth_audience or settings.public_url,
            claim=settings.oauth_principal_claim,
            resource=settings.public_url,
            keys=KeySet(settings.oauth_jwks_url, transport=transport),
        )
    static = None if settings.auth_token is None else settings.auth_token.get_secret_value()
    return Authenticator(static=static, named=named, oauth=oauth)


# ---------------------------------------------------------------------- the ASGI stack


class _Refusal(AuthenticationError):
    def __init__(self, reason: str, *, wrong: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wrong = wrong


class BearerBackend(BearerAuthBackend):
    """The SDK's bearer backend, stricter: exactly one ``Authorization`` header, and a refusal
    raises (so the 401 can say why) instead of passing the request on unauthenticated."""

    token_verifier: Authenticator

    def __init__(self, verifier: Authenticator) -> None:
        super().__init__(verifier)

    async def authenticate(
        self, conn: HTTPConnection
    ) -> tuple[AuthCredentials, AuthenticatedUser] | None:
        values = conn.headers.getlist("authorization")
        if len(values) > 1:
            raise _Refusal("Send one Authorization header, not several.", wrong=True)
        scheme, _, credentials = (values[0] if values else "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _Refusal("This server needs 'Authorization: Bearer <token>'.", wrong=False)
        try:
            access = await self.token_verifier.authenticate(credentials.strip())
        except TokenRefused as exc:
            raise _Refusal(str(exc), wrong=True) from None
        return AuthCredentials(access.scopes), AuthenticatedUser(access)


def _refused(metadata_url: str | None, conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """The 401 of a refused request (logged with the client's address and the reason)."""
    refusal = exc if isinstance(exc, _Refusal) else _Refusal(str(exc), wrong=True)
    client = conn.client
    logger.info(
        "refused an HTTP request from %s: %s",
        f"{client.host}:{client.port}" if client else "an unknown client",
        refusal.reason,
    )
    parts = [f'realm="{REALM}"']
    if refusal.wrong:
        parts += ['error="invalid_token"', f'error_description="{refusal.reason}"']
        body = {"error": "invalid_token", "error_description": refusal.reason}
    else:
        body = {"error": "unauthorized", "error_description": refusal.reason}
    if metadata_url is not None:
        parts.append(f'resource_metadata="{metadata_url}"')
    return JSONResponse(
        body, status_code=401, headers={"WWW-Authenticate": "Bearer " + ", ".join(parts)}
    )


class _Entrance:
    """Where a request goes: lifespan events straight to ``app`` (the SDK's
    ``RequireAuthMiddleware`` would refuse them), ``public`` paths to ``public``, unguarded;
    everything else through ``guarded``."""

    def __init__(
        self, app: ASGIApp, guarded: ASGIApp, public: ASGIApp | None, paths: frozenset[str]
    ) -> None:
        self.app = app
        self.guarded = guarded
        self.public = public
        self.paths = paths

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
        elif self.public is not None and scope["type"] == "http" and scope["path"] in self.paths:
            await self.public(scope, receive, send)
        else:
            await self.guarded(scope, receive, send)


def protect(app: ASGIApp, verifier: Authenticator) -> ASGIApp:
    """``app`` behind bearer authentication by ``verifier`` (see the module docstring); with
    OAuth, the protected-resource metadata is served beside it, open to all."""
    metadata_url = None if verifier.oauth is None else verifier.oauth.metadata_url
    guarded: ASGIApp = AuthenticationMiddleware(
        RequireAuthMiddleware(
            AuthContextMiddleware(app),
            required_scopes=[],
            resource_metadata_url=None if metadata_url is None else AnyHttpUrl(metadata_url),
        ),
        backend=BearerBackend(verifier),
        on_error=partial(_refused, metadata_url),
    )
    if verifier.oauth is None or metadata_url is None:
        return _Entrance(app, guarded, None, frozenset())
    paths = frozenset({urlparse(metadata_url).path})
    return _Entrance(app, guarded, verifier.oauth.routes(), paths)
