"""`mai-image emulator` / `python -m mai_tools.emulator`: every fault can be set at start."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette

from mai_tools.emulator import EmulatorConfig, Faults
from mai_tools.emulator._cli import emulator_command


def _started_with(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, str]:
    """Run the command with ``args`` and return the emulator it would serve (no server runs)."""
    seen: dict[str, Any] = {}

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        app = self.config.app
        assert isinstance(app, Starlette)
        seen["emulator"] = app.state.emulator
        for sock in sockets or ():
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    result = CliRunner().invoke(emulator_command, ["--port", "0", *args])
    assert result.exit_code == 0, result.output
    return seen["emulator"], result.output


def test_defaults_inject_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    emulator, output = _started_with(monkeypatch)
    assert emulator.faults == Faults()
    assert emulator.config == EmulatorConfig()  # the options' defaults are the config's
    assert emulator.config.api_keys == ("emulator-key",)
    assert "export PIXAZO_API_KEY=emulator-key" in output


def test_every_fault_has_a_start_option(monkeypatch: pytest.MonkeyPatch) -> None:
    emulator, _ = _started_with(
        monkeypatch,
        "--key", "k1", "--key", "k2",
        "--min-duration", "0.5", "--max-duration", "0.7", "--seed", "3",
        "--rate-limit-first", "2", "--rate-limit-polls", "0.1", "--rate-limit-submits", "0.2",
        "--retry-after", "4", "--retry-after-date",
        "--error-500", "0.05", "--error-502", "0.06", "--drop", "0.07", "--submit-errors", "0.08",
        "--fail-rate", "0.09", "--error-rate", "0.1",
        "--slow", "0.2", "--slow-seconds", "1.5",
        "--poor-key", "sk-poor", "--forbidden-key", "sk-banned",
        "--foreign-polling-url",
        "--quota-calls", "100", "--quota-period", "60",
        "--cdn-rate-limit-first", "3", "--cdn-rate-limit", "0.11",
        "--webhook-drop", "0.12", "--webhook-delay", "0.13", "--webhook-delay-seconds", "2.5",
        "--webhook-duplicate", "0.14",
        "--webhook-only-to", "http://127.0.0.1:9000/hooks/",
        "--webhook-only-to", "http://localhost:9001/",
        "--allow-remote-webhooks", "--max-jobs", "50", "--job-ttl", "120",
        "--long-side", "64", "--public-url", "http://media.test:8080",
    )  # fmt: skip
    assert emulator.config.api_keys == ("k1", "k2")
    assert (emulator.config.min_duration, emulator.config.max_duration) == (0.5, 0.7)
    assert emulator.config.allow_remote_webhooks is True
    assert (emulator.config.max_jobs, emulator.config.job_ttl) == (50, 120)
    assert emulator.config.long_side == 64
    assert emulator.config.public_url == "http://media.test:8080"
    assert emulator.faults == Faults(
        rate_limit_first_submits=2,
        rate_limit_poll_rate=0.1,
        rate_limit_submit_rate=0.2,
        retry_after=4,
        retry_after_as_date=True,
        error_500_rate=0.05,
        error_502_rate=0.06,
        drop_rate=0.07,
        submit_error_rate=0.08,
        fail_rate=0.09,
        error_rate=0.1,
        slow_rate=0.2,
        slow_seconds=1.5,
        insufficient_balance_keys=("sk-poor",),
        forbidden_keys=("sk-banned",),
        foreign_polling_url=True,
        quota_calls=100,
        quota_period=60,
        cdn_rate_limit_first=3,
        cdn_rate_limit_rate=0.11,
        webhook_drop_rate=0.12,
        webhook_delay_rate=0.13,
        webhook_delay_seconds=2.5,
        webhook_duplicate_rate=0.14,
        webhook_only_to=("http://127.0.0.1:9000/hooks/", "http://localhost:9001/"),
    )
    settable = set(Faults.model_fields) - {"fail_marker", "error_marker"}
    assert {k for k, v in emulator.faults if v != getattr(Faults(), k)} == settable


def test_spawn_emulator_passes_the_public_url() -> None:
    """Benchmarks run the emulator in its own process behind a media front of their own."""
    from mai_tools import MAIImageClient
    from mai_tools.emulator import spawn_emulator

    with (
        spawn_emulator(
            min_duration=0, max_duration=0, long_side=32, public_url="http://127.0.0.1:9"
        ) as remote,
        MAIImageClient(api_key=remote.api_key, base_url=remote.base_url) as client,
    ):
        result = client.generate("a small one")
    assert result.image_urls[0].startswith("http://127.0.0.1:9/")
