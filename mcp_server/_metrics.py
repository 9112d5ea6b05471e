"""Prometheus metrics on the HTTP server: ``mai-image-mcp --metrics`` serves ``GET /metrics``.

The library emits its metrics through the OpenTelemetry global API only
(:mod:`mai_tools._telemetry`: ``gen_ai.client.operation.duration``,
``mai_tools.images.requested`` / ``.completed`` / ``.failed`` / ``.unknown``), and so does the
server's spend counter (:class:`SpendMeter`). The server is an application, so with
``--metrics`` it installs what a library must not:
:func:`install` sets the global OpenTelemetry SDK ``MeterProvider`` with the OpenTelemetry
Prometheus exporter's ``PrometheusMetricReader``, registered into a ``prometheus_client``
registry of its own (with the process, platform and GC collectors), and :class:`MetricsEndpoint`
answers ``GET /metrics`` from that registry in the Prometheus text format (OpenMetrics when the
scraper asks for it). The OpenTelemetry exporter, not ``prometheus-client`` alone: the
instruments already exist as OpenTelemetry instruments, and it renders their names, units and
attributes by the OpenTelemetry-to-Prometheus rules (``gen_ai_client_operation_duration_seconds``,
``mai_tools_images_requested_total``, an ``otel_scope_name`` label, a ``target_info`` series).

Without ``--metrics`` none of this is imported: no SDK, no exporter, no ``prometheus_client``.
A process where a global ``MeterProvider`` is already set (``opentelemetry-instrument``,
``OTEL_PYTHON_METER_PROVIDER``) is refused at start: the SDK has no way to add a reader to a
provider that exists, and a second provider would see nothing (the global one cannot be
replaced), so ``/metrics`` would be silently empty.

Who may read ``/metrics``: it sits behind the same bearer authentication as ``/mcp`` (a request
without a valid token gets the same 401) and the same Host/Origin checks; it is not one of the
unauthenticated probes (:mod:`mcp_server._health`). When callers are many principals (named
tokens, OAuth) only an operator (``--operator``) may read it (others get 403): its series add up
every principal's jobs and spending.

Labels carry no secret, prompt, URL or request id. The spend counter's ``principal`` label is
there only when principals are a bounded set (no OAuth: a tokens file's names, ``default``,
``local``); OAuth subjects are as many as the identity provider has users, so with OAuth the
spend is summed over principals (per-principal amounts: the audit log, ``list_recent_jobs``).
"""

from __future__ import annotations

import json
import logging
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from mai_tools._telemetry import INSTRUMENTATION

from ._identity import many_principals, scope_principal
from ._logs import job_fields

if TYPE_CHECKING:
    from mcp.server.transport_security import TransportSecuritySettings

    from mai_tools.jobbook._record import Event, JobRecord

    from ._settings import Settings

logger = logging.getLogger("mcp_server")

METRICS_PATH: Final = "/metrics"
INSTALL_HOWTO: Final = 'pip install "mai-tools[metrics]"'
SERVICE_NAME: Final = "mai-image-mcp"
SPEND_METRIC: Final = "mai_tools.spend.estimated"
"""The spend counter: ``mai_tools_spend_estimated_total{currency=...}`` in Prometheus."""
CHARGED: Final = ("COMPLETED", "FAILED")
"""Statuses the gateway charges (ERROR is a system error, not charged)."""


_ALREADY_SET: Final = (
    "--metrics (MAI_MCP_METRICS) sets this process's OpenTelemetry meter provider, and one is "
    "already set (by opentelemetry-instrument or OTEL_PYTHON_METER_PROVIDER): the server's "
    "metrics go to that provider's exporters. Either drop --metrics and export through that "
    "setup (OTEL_METRICS_EXPORTER=prometheus serves them on a port of its own, without the "
    "token), or start the server without it."
)


class MetricsSetupError(Exception):
    """``--metrics`` cannot be set up (a start-up error, in words, naming the fix)."""


class Exposition:
    """The registry ``/metrics`` answers from, rendered as the scraper asks."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def render(self, accept: str) -> tuple[bytes, str]:
        """(body, content type): the Prometheus text format, or OpenMetrics when ``accept``
        asks for it."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def install() -> Exposition:
    """Set the process's global OpenTelemetry ``MeterProvider``: the SDK's, exporting to a
    Prometheus registry of its own. Called once, by ``mai-image-mcp --metrics``.

    Raises:
        MetricsSetupError: the ``metrics`` extra is not installed, or the process already has
            a global meter provider.
    """
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )
    except ImportError as exc:
        raise MetricsSetupError(
            f"--metrics (MAI_MCP_METRICS) needs the metrics extra, which is not installed "
            f"({exc.name or exc}): {INSTALL_HOWTO}"
        ) from None

    # A provider someone set (opentelemetry-instrument sets the SDK's) cannot be replaced, and
    # no reader can be added to it. An SDK one is refused before making ours; any other kind is
    # found out when ours is not the one in force after setting it.
    if isinstance(metrics.get_meter_provider(), MeterProvider):
        raise MetricsSetupError(_ALREADY_SET)
    from mai_tools import __version__

    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    reader = PrometheusMetricReader(registry=registry)
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        provider.shutdown()
        raise MetricsSetupError(_ALREADY_SET)
    return Exposition(registry)


class MetricsEndpoint:
    """ASGI middleware answering ``GET`` / ``HEAD`` :data:`METRICS_PATH` from ``exposition``;
    every other request goes to ``app``.

    Put it *inside* the bearer authentication (:func:`mcp_server._auth.protect`): it sees only
    authenticated requests (or every request of a server without authentication, whose caller
    is the one local user). It applies the Host/Origin checks of ``/mcp`` itself, and with many
    principals answers only operators.
    """

    def __init__(
        self,
        app: ASGIApp,
        exposition: Exposition,
        settings: Settings,
        security: TransportSecuritySettings,
    ) -> None:
        from mcp.server.transport_security import TransportSecurityMiddleware

        self.app = app
        self.exposition = exposition
        self.operators = frozenset(settings.operators)
        self.many = many_principals(settings)
        self._security = TransportSecurityMiddleware(security)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != METRICS_PATH:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        refused = await self._security.validate_request(request, is_post=False)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, scope, 405, *_json({"error": "method not allowed"}), allow=True)
            return
        try:
            caller = scope_principal(scope)
        except PermissionError:
            caller = None
        if self.many and caller not in self.operators:
            reason = f"only an operator (--operator) may read {METRICS_PATH}"
            await _send(send, scope, 403, *_json({"error": "forbidden", "message": reason}))
            return
        body, content_type = self.exposition.render(request.headers.get("accept", ""))
        await _send(send, scope, 200, body, content_type)


def _json(data: dict[str, str]) -> tuple[bytes, str]:
    return json.dumps(data).encode(), "application/json"


async def _send(
    send: Send, scope: Scope, status: int, body: bytes, content_type: str, *, allow: bool = False
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class SpendMeter:
    """A job book observer: the server's estimated spend, ``mai_tools.spend.estimated``.

    A job adds ``price_per_image`` times its images when it finishes with a status the gateway
    charges (:data:`CHARGED`), labelled ``currency``, ``tool``, ``status`` and (only when
    principals are a bounded set: ``principals``) ``principal``. A job whose outcome stays
    unknown adds nothing (it is counted in ``mai_tools.images.unknown``): the counter is a
    floor, where the spending limits count such a job as spent.

    It emits through the OpenTelemetry global API, as the library does, and only while that API
    is loaded (:func:`mai_tools._telemetry.enabled` says why): with ``--metrics``, or under an
    application's own provider; otherwise it costs a dictionary look-up per job event.
    """

    def __init__(
        self, price_per_image: Decimal, currency: str, *, principals: bool, meter: Any = None
    ) -> None:
        self.price = price_per_image
        self.currency = currency
        self.principals = principals
        self._meter = meter
        self._counter: Any = None

    def __repr__(self) -> str:
        return f"SpendMeter({self.price} {self.currency})"

    def __call__(self, event: Event, record: JobRecord) -> None:
        if event != "finished" or record.status not in CHARGED:
            return
        counter = self._counter or self._make()
        if counter is None:
            return
        fields = job_fields(event, record)
        attrs = {"currency": self.currency, "tool": fields["tool"], "status": record.status}
        if self.principals:
            attrs["principal"] = record.principal
        counter.add(float(self.price * fields["images"]), attrs)

    def _make(self) -> Any:
        meter = self._meter
        if meter is None:
            if "opentelemetry.metrics" not in sys.modules:
                return None
            from opentelemetry import metrics

            from mai_tools import __version__

            meter = metrics.get_meter(INSTRUMENTATION, __version__)
        self._counter = meter.create_counter(
            SPEND_METRIC,
            unit="{currency}",  # an annotation: the currency is a label
            description="Estimated spend of the jobs the gateway charges (price per image "
            "times images)",
        )
        return self._counter


def spend_meter(settings: Settings) -> SpendMeter | None:
    """The server's :class:`SpendMeter`, or None when no price is set."""
    price = settings.price_per_image
    if price is None:
        return None
    bounded = settings.oauth_issuer is None and settings.oauth_jwks_url is None
    return SpendMeter(Decimal(str(price)), settings.currency, principals=bounded)
