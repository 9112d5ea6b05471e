"""``mai-image-mcp --metrics``: Prometheus metrics at ``GET /metrics`` (mcp_server/_metrics.py).

The served tests run the real ``mai-image-mcp`` on loopback (it installs the process's global
OpenTelemetry meter provider, which this test process must not); the endpoint's rules are also
checked in process, on an app serving a registry of the test's own.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mai_tools import GenerateRequest
from mai_tools.emulator import RunningEmulator
from mai_tools.jobbook import JobRecord
from mcp_server import Settings, create_server
from mcp_server.__main__ import cli
from mcp_server._http import http_app
from mcp_server._metrics import INSTALL_HOWTO, Exposition, SpendMeter, spend_meter
from mcp_server._tokens import NamedToken, digest, write
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY
from tests.support.identity import http_command, served_command, server_env
from tests.support.jobbook import record_of
from tests.support.serving import free_socket, serving

TOKENS = {
    "alice": "mai_metrics-token-of-alice-0123456789",
    "carol": "mai_metrics-token-of-carol-0123456789",  # the operator
}
PROMPT = "a lighthouse painted by a metrics test"


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0.0, max_duration=0.0)


def _bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def _samples(text: str) -> dict[str, list[Sample]]:
    """Every sample of a scrape, by sample name (``..._total``, ``..._bucket``, ...)."""
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels``."""
    matching = [s for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0].value


# --------------------------------------------------------------------------- served


async def test_an_operator_scrapes_the_jobs_and_the_spend_and_nobody_else_can(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.json"
    write(tokens, {n: NamedToken(n, digest(t), "2026-12-07T00:00:00Z") for n, t in TOKENS.items()})
    command = [*http_command(), "--tokens-file", str(tokens), "--operator", "carol", "--metrics"]
    command += ["--price-per-image", "0.04", "--currency", "EUR"]
    command += ["--job-book", str(tmp_path / "jobs.sqlite3")]
    env = server_env(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=emu.base_url)
    with served_command(command, env) as served:
        async with (
            httpx2.AsyncClient(headers=_bearer("alice"), timeout=30) as http,
            Client(streamable_http_client(f"{served.origin}/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool("generate_image", {"prompt": PROMPT, "num_images": 2})
        assert not result.is_error, result
        request_id = (result.structured_content or {})["request_id"]
        async with httpx2.AsyncClient(base_url=served.origin, timeout=10) as plain:
            scrape = await plain.get("/metrics", headers=_bearer("carol"))
            alice = await plain.get("/metrics", headers=_bearer("alice"))
            anonymous = await plain.get("/metrics")
            mcp_anonymous = await plain.get("/mcp")
            wrong = await plain.get("/metrics", headers={"Authorization": "Bearer nope"})

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == mcp_anonymous.headers["www-authenticate"]
    assert wrong.status_code == 401
    assert alice.status_code == 403
    assert "operator" in alice.json()["message"]
    assert "mai_tools" not in alice.text

    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(scrape.text)
    job = {"gen_ai_operation_name": "generate_image", "gen_ai_provider_name": "pixazo"}
    assert _value(samples, "mai_tools_images_requested_total", **job) == 2
    assert _value(samples, "mai_tools_images_completed_total", **job) == 2
    assert "mai_tools_images_failed_total" not in samples
    assert _value(samples, "gen_ai_client_operation_duration_seconds_count", **job) == 1
    assert _value(samples, "gen_ai_client_operation_duration_seconds_bucket", le="+Inf", **job) == 1
    spend = {"currency": "EUR", "principal": "alice", "tool": "generate_image"}
    assert _value(samples, "mai_tools_spend_estimated_total", status="COMPLETED", **spend) == (
        pytest.approx(0.08)
    )
    assert _value(samples, "target_info", service_name="mai-image-mcp") == 1
    assert "process_cpu_seconds_total" in samples
    # No secret, prompt, gateway address or job id is a label or a value.
    for told in (KEY, *TOKENS.values(), PROMPT, "lighthouse", request_id, emu.base_url):
        assert told not in scrape.text
    labels = {k for found in samples.values() for sample in found for k in sample.labels}
    assert not labels & {"request_id", "prompt", "url", "server_address", "token"}
    assert "Prometheus metrics at http://127.0.0.1:" in served.stderr


def test_without_a_price_there_is_no_spend_and_a_single_token_may_scrape(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKENS["alice"])
    token.chmod(0o600)
    command = [*http_command(), "--auth-token-file", str(token), "--metrics"]
    env = server_env(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=emu.base_url, MAI_JOB_BOOK="off")
    with served_command(command, env) as served:
        scrape = httpx.get(f"{served.origin}/metrics", headers=_bearer("alice"), timeout=10)
        openmetrics = httpx.get(
            f"{served.origin}/metrics",
            headers={**_bearer("alice"), "Accept": "application/openmetrics-text"},
            timeout=10,
        )
    assert scrape.status_code == 200
    assert "mai_tools_spend" not in scrape.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


# --------------------------------------------------------------------------- start-up errors


def test_metrics_on_stdio_is_refused_at_start() -> None:
    for args, env in ((["--metrics"], {}), ([], {"MAI_MCP_METRICS": "1"})):
        done = CliRunner().invoke(cli, args, env=env)
        assert done.exit_code == 2, done.output
        assert "--metrics (MAI_MCP_METRICS) needs --transport streamable-http" in done.output


def test_metrics_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # An import that fails: the exporter is not installed (None in sys.modules: ImportError).
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    done = CliRunner().invoke(cli, ["--transport", "streamable-http", "--metrics"])
    assert done.exit_code == 2, done.output
    assert "--metrics (MAI_MCP_METRICS) needs the metrics extra" in done.output
    assert INSTALL_HOWTO in done.output
    assert "The server did not start" in done.output


WITH_A_PROVIDER = """
import sys
from opentelemetry import metrics
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
metrics.set_meter_provider({provider})
from mcp_server.__main__ import main
sys.argv = ["mai-image-mcp", "--transport", "streamable-http", "--metrics", "--emulator"]
main()
"""


@pytest.mark.parametrize(
    "provider",
    [
        pytest.param("MeterProvider()", id="the-sdk-one-as-opentelemetry-instrument-sets"),
        pytest.param("NoOpMeterProvider()", id="another-kind"),
    ],
)
def test_metrics_under_another_meter_provider_is_refused_at_start(provider: str) -> None:
    done = _python(WITH_A_PROVIDER.format(provider=provider))
    assert done.returncode == 2, done.stderr
    assert "one is already set (by opentelemetry-instrument" in done.stderr
    assert "OTEL_METRICS_EXPORTER=prometheus" in done.stderr


def _python(code: str) -> Any:
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=server_env(),
    )


SERVE_AND_TELL = """
import os, signal, sys
def told(*_):
    loaded = sorted(
        m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter",
                                                "prometheus_client"))
    )
    print("LOADED:", loaded, file=sys.stderr, flush=True)
    os._exit(0)
# uvicorn raises the SIGTERM it caught again once it has stopped: this handler then tells.
signal.signal(signal.SIGTERM, told)
from mcp_server.__main__ import main
sys.argv = ["mai-image-mcp", *sys.argv[1:]]
main()
"""


async def test_without_metrics_no_sdk_is_imported_and_there_is_no_endpoint() -> None:
    command = [sys.executable, "-c", textwrap.dedent(SERVE_AND_TELL)]
    command += ["--transport", "streamable-http", "--emulator"]
    with served_command(command, server_env(MAI_JOB_BOOK="off")) as served:
        async with Client(streamable_http_client(f"{served.origin}/mcp")) as client:
            result = await client.call_tool("generate_image", {"prompt": PROMPT})
        assert not result.is_error, result
        async with httpx2.AsyncClient(timeout=10) as plain:
            missing = await plain.get(f"{served.origin}/metrics")
    assert missing.status_code == 404
    assert "LOADED: []" in served.stderr, served.stderr[-2000:]


# --------------------------------------------------------------------------- in process


def _registry() -> Exposition:
    registry = CollectorRegistry()
    Counter("probe_things", "Things", registry=registry).inc(3)
    return Exposition(registry)


@pytest.fixture
def local_server(emu: RunningEmulator) -> Iterator[str]:
    """A loopback server without authentication (its caller: ``local``), with metrics."""
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off", job_book="off")
    sock = free_socket()
    port = sock.getsockname()[1]
    app = http_app(create_server(settings), settings, port=port, metrics=_registry())
    with serving(app, sock) as origin:
        yield origin


def test_the_local_user_of_a_loopback_server_may_scrape(local_server: str) -> None:
    scrape = httpx.get(f"{local_server}/metrics", timeout=10)
    head = httpx.head(f"{local_server}/metrics", timeout=10)
    post = httpx.post(f"{local_server}/metrics", timeout=10)
    rebound = httpx.get(f"{local_server}/metrics", headers={"Host": "evil.example"}, timeout=10)
    assert scrape.status_code == 200
    assert _value(_samples(scrape.text), "probe_things_total") == 3
    assert scrape.headers["cache-control"] == "no-store"
    assert head.status_code == 200
    assert head.content == b""
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert rebound.status_code == 421  # the Host check of /mcp (DNS rebinding)


# --------------------------------------------------------------------------- the spend counter


def _record(num_images: int = 3, **columns: Any) -> JobRecord:
    """A finished ``generate_image`` job of alice's (``columns``: other values)."""
    request = GenerateRequest(prompt=PROMPT, num_images=num_images)
    columns = {"principal": "alice", "status": "COMPLETED", **columns}
    return record_of(request, surface="mcp", state="finished", **columns)


def _spend(meter: SpendMeter, reader: InMemoryMetricReader) -> dict[tuple[Any, ...], float]:
    data = reader.get_metrics_data()
    found: dict[tuple[Any, ...], float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                assert metric.name == "mai_tools.spend.estimated"
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    found[tuple(sorted((point.attributes or {}).items()))] = point.value
    return found


@pytest.mark.parametrize("oauth", [False, True], ids=["named-tokens", "oauth"])
def test_the_spend_counts_charged_jobs_with_a_principal_only_when_bounded(oauth: bool) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])  # not the global one
    meter = SpendMeter(
        Decimal("0.04"), "EUR", principals=not oauth, meter=provider.get_meter("test")
    )
    meter("intent", _record(status=None))
    meter("submitted", _record(status="QUEUED"))
    meter("finished", _record())  # 3 images
    meter("finished", _record(num_images=1, status="FAILED"))
    meter("finished", _record(status="ERROR"))  # a system error: not charged
    meter("unknown", _record(status=None))
    spent = _spend(meter, reader)
    who = () if oauth else (("principal", "alice"),)

    def key(status: str) -> tuple[Any, ...]:
        labels = {"currency": "EUR", "status": status, "tool": "generate_image", **dict(who)}
        return tuple(sorted(labels.items()))

    assert spent == {key("COMPLETED"): pytest.approx(0.12), key("FAILED"): pytest.approx(0.04)}
    provider.shutdown()


def test_the_server_has_a_spend_meter_only_with_a_price() -> None:
    assert spend_meter(Settings()) is None
    priced = spend_meter(Settings(price_per_image="0.04"))
    assert priced is not None
    assert (priced.price, priced.currency, priced.principals) == (Decimal("0.04"), "USD", True)
    oauth = Settings(
        price_per_image="0.04",
        oauth_issuer="https://id.example.com",
        public_url="https://mcp.example.com",
    )
    made = spend_meter(oauth)
    assert made is not None
    assert made.principals is False
