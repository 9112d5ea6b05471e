"""Serving MCP over Streamable HTTP safely: a bearer token and Host/Origin checks.

Every HTTP request to the server runs the operator's API key (and, with ``allowed_dirs``, reads
their files), so the HTTP app is never open by accident:

- :func:`mcp_server._auth.protect` wraps the app the SDK builds: with any authentication
  configured (the token, named tokens, OAuth), a request without a valid
  ``Authorization: Bearer <token>`` gets 401 and reaches nothing else; an accepted one carries
  its principal in ``scope["user"]``.
- :func:`transport_security` keeps the SDK's DNS-rebinding protection on for every bind
  address, allowing the bound ``host:port``, the localhost forms and what the operator adds.
- :func:`refusal` is the start-up rule: a non-loopback bind needs authentication.
- ``/healthz`` and ``/readyz`` (:mod:`mcp_server._health`) answer before all of that.
"""

from __future__ import annotations

import ipaddress
import logging
from types import FrameType
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from mai_tools._server_guard import Guard, RateLimit, guarded_protocol, rate_limited_log

from ._auth import Authenticator, configured, protect
from ._auth import authenticator as build_authenticator
from ._health import Health
from ._metrics import Exposition, MetricsEndpoint
from ._resume import ConnectionWatch, MemoryEventStore
from ._settings import ENV_AUTH_TOKEN, TOKEN_HOWTO, Settings
from ._state import STOPPING

logger = logging.getLogger("mcp_server")

MAX_REQUEST_BODY_BYTES = 32 * 1024 * 1024
"""Largest JSON-RPC request body: fits a 20 MiB source image as a base64 data URI."""
_LOOPBACK_FORMS = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """True if ``host`` only listens on this machine (``localhost``, ``127.x.y.z``, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # another host name: it may resolve to any interface
        return False


def _is_wildcard(host: str) -> bool:
    name = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(name).is_unspecified
    except ValueError:
        return False


def _host_form(host: str) -> str:
    """``host`` as it appears in a Host header (IPv6 literals in brackets)."""
    name = host.strip()
    if ":" in name and not name.startswith("["):
        return f"[{name}]"
    return name


def default_hosts(host: str, port: int) -> list[str]:
    """Host header values the server accepts on its own: ``host:port`` for the localhost
    forms and the bound address (unless it is a wildcard such as ``0.0.0.0``, which no client
    names: add the names clients use with ``--allowed-host``)."""
    names = list(_LOOPBACK_FORMS)
    bound = _host_form(host)
    if not _is_wildcard(host) and bound.lower() not in names:
        names.append(bound)
    forms = [f"{name}:{port}" for name in names]
    if port == 80:  # clients leave the default port out of the Host header
        forms += names
    return forms


def transport_security(
    host: str, port: int, settings: Settings | None = None
) -> TransportSecuritySettings:
    """DNS-rebinding protection for the HTTP app: on, whatever the bind address.

    The SDK turns it on by itself only for a loopback bind; here it is always on. Accepted Host
    headers: :func:`default_hosts` plus ``settings.allowed_hosts``; accepted Origin headers:
    ``http://`` and each of the default hosts, plus ``settings.allowed_origins``. (A request
    without an Origin header, as non-browser clients send, is accepted.)
    """
    hosts = default_hosts(host, port)
    origins = [f"http://{h}" for h in hosts]
    if settings is not None:
        hosts += [h for h in settings.allowed_hosts if h not in hosts]
        origins += [o for o in settings.allowed_origins if o not in origins]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``.

    Anything else gets 401 with a ``WWW-Authenticate: Bearer`` header and never reaches the
    wrapped app. The token is compared in constant time and appears in no repr or log.
    Lifespan events pass through. (The single-token case of :func:`mcp_server._auth.protect`.)
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._guarded = protect(app, Authenticator(static=token))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guarded(scope, receive, send)


def http_app(
    server: MCPServer,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    stateless: bool = False,
    event_store: MemoryEventStore | None = None,
    authenticator: Authenticator | None = None,
    metrics: Exposition | None = None,
) -> ASGIApp:
    """The ASGI app to serve: the SDK's Streamable HTTP app (at ``/mcp``) with DNS-rebinding
    protection on, behind bearer authentication (:func:`mcp_server._auth.protect`) when the
    settings ask for any.

    ``authenticator`` is the one the settings give, made beforehand (``mai-image-mcp`` makes
    it, and reads the OAuth key set, before it starts serving); without one it is made here
    (:class:`~mcp_server._auth.AuthSetupError` for a bad tokens file or OAuth settings), and
    the key set is read on the first request.

    ``host`` and ``port`` are the address the server is bound to (they define the default
    accepted Host headers). ``event_store`` (the one given to ``create_server``) makes the
    session-era answers resumable; stateless HTTP has no streams to resume and ignores it.
    Every request is watched (:class:`~mcp_server._resume.ConnectionWatch`), so a call whose
    client disconnected stops polling. Run its lifespan (uvicorn does) before sending requests.
    ``metrics`` (from :func:`mcp_server._metrics.install`) serves ``GET /metrics`` behind the
    same authentication and Host checks as ``/mcp``.
    """
    app: ASGIApp = server.streamable_http_app(
        stateless_http=stateless,
        # edit_image takes a source image of up to 20 MiB as a data URI (base64: 4/3 of it)
        # inside the JSON-RPC body: the SDK's default limit refused 3.3 MiB ones.
        max_request_body_size=MAX_REQUEST_BODY_BYTES,
        event_store=None if stateless else event_store,
        transport_security=transport_security(host, port, settings),
        host=host,
        # Sessions a client opens and never closes (a flood of them) must neither pile up in
        # memory nor lock other clients out for long: a cap, and an idle timeout.
        max_sessions=settings.max_sessions,
        session_idle_timeout=settings.session_idle_timeout,
    )
    _quiet_session_refusals()
    app = ConnectionWatch(app)
    if metrics is not None:  # inside the authentication: only callers with a token reach it
        app = MetricsEndpoint(app, metrics, settings, transport_security(host, port, settings))
    verifier = authenticator if authenticator is not None else build_authenticator(settings)
    if verifier is not None:
        app = protect(app, verifier)
    # Outermost: probes carry no token and name no allowed host (_health says why it is safe).
    return Health(app, server, authenticator=verifier)


_SESSION_REFUSALS = "Refusing to open a new session"


def _quiet_session_refusals() -> None:
    """The SDK logs a warning for every session it refuses at the cap: a session flood then
    writes a line per request. At most 10 a minute (its other records pass)."""
    log = logging.getLogger("mcp.server.streamable_http_manager")
    if not any(isinstance(f, RateLimit) and f.only == _SESSION_REFUSALS for f in log.filters):
        log.addFilter(RateLimit(only=_SESSION_REFUSALS))


def refusal(host: str, settings: Settings, *, insecure_no_auth: bool) -> str | None:
    """Why the server must not start on ``host`` (None if it may): a non-loopback address
    without authentication (a token, named tokens or OAuth) would let anyone who reaches the
    port run jobs on the operator's key."""
    if configured(settings) or insecure_no_auth or is_loopback(host):
        return None
    return (
        f"Refusing to serve MCP over HTTP on {host} without authentication: anyone who can "
        "reach this port could run image jobs on your API key"
        + (" and read the images in the allowed directories" if settings.allowed_dirs else "")
        + f". {TOKEN_HOWTO} Or bind a loopback address (--host 127.0.0.1). To serve without "
        "authentication anyway (behind a proxy that authenticates), pass --insecure-no-auth."
    )


def startup_notes(host: str, port: int, settings: Settings, *, insecure_no_auth: bool) -> list[str]:
    """Lines for stderr when serving HTTP: the warnings an operator must see."""
    notes: list[str] = []
    if settings.tokens_file is not None:
        notes.append(
            f"note: named tokens from {settings.tokens_file} (read again when it changes; "
            "mai-image-mcp tokens add/list/revoke)."
        )
    if settings.oauth_issuer is not None:
        notes.append(
            f"note: OAuth access tokens from {settings.oauth_issuer} for "
            f"{settings.oauth_audience or settings.public_url}; the caller is their "
            f"{settings.oauth_principal_claim!r} claim."
        )
    if not configured(settings):
        if is_loopback(host):
            notes.append(
                f"note: no {ENV_AUTH_TOKEN}: any program on this machine can use this server "
                "(and your API key)."
            )
        elif insecure_no_auth:
            notes.append(
                f"WARNING: --insecure-no-auth: serving on {host}:{port} WITHOUT "
                "AUTHENTICATION. Anyone who can reach this port can run image jobs on your API "
                "key"
                + (" and read images from the allowed directories" if settings.allowed_dirs else "")
                + f". {TOKEN_HOWTO}"
            )
    if _is_wildcard(host) and not settings.allowed_hosts:
        notes.append(
            f"note: bound to {host}: only requests with Host "
            + ", ".join(default_hosts(host, port))
            + " are accepted. Add the names clients use with --allowed-host NAME:PORT "
            "(or MAI_MCP_ALLOWED_HOSTS)."
        )
    return notes


def connection_guard(settings: Settings) -> Guard:
    """What a flood of connections may take from the HTTP server (:mod:`mai_tools._server_guard`,
    the webhook receiver's guard with the server's own limits): ``max_connections`` open at
    once, ``max_connections_per_client`` from one address (0: no cap of its own, as behind a
    reverse proxy), and each request's headers and body read within ``request_read_timeout``
    (its answer, a tool call's event stream, may take as long as the call)."""
    return Guard(
        settings.max_connections,
        settings.max_connections_per_client or settings.max_connections,
        settings.request_read_timeout,
        until="received",
        log=rate_limited_log("mcp_server.connections"),
        server="mai-image-mcp",
        turned_away="its client saw the connection reset (raise --max-connections if this is "
        "no flood)",
    )


def serve(
    app: ASGIApp, *, host: str, port: int, log_level: str, guard: Guard | None = None
) -> None:
    """Serve ``app`` with uvicorn until interrupted (see :data:`_state.STOPPING`), behind
    ``guard`` (:func:`connection_guard`) when given."""
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            STOPPING.set()  # calls still waiting finish, but their answers may go nowhere
            super().handle_exit(sig, frame)

    # With a guard, a flood's connections wait in a long backlog to be closed, not refused.
    guarded: dict[str, Any] = (
        {} if guard is None else {"http": guarded_protocol(guard), "backlog": 2048}
    )
    # log_config=None: uvicorn's records go to the process's one handler (_logs.setup), its
    # access lines included, one line each, in the server's log format.
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level.lower(), log_config=None, **guarded
    )
    _Server(config).run()
