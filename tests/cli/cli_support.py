"""Shared helpers for the mai-image tests: invoke the CLI in-process and check its hygiene."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mai_tools import FakeClock, MAIImageClient
from mai_tools.cli import CliState, cli
from tests.support.fakes import FAST_RETRY, KEY, Gateway

Handler = Callable[[httpx.Request], httpx.Response]

CANARY = "sk-canary-"
POOR_KEY = "sk-canary-poor-0123456789"  # the emulator answers 402 for it (when told to)
FORBIDDEN_KEY = "sk-canary-forbidden-0123"  # ... and 403 for this one
WRONG_KEY = "sk-canary-wrong-0123456789"  # never accepted: 401
RID_PREFIX = "microsoft-mai-image-2-5_"

__all__ = [
    "CANARY",
    "FORBIDDEN_KEY",
    "KEY",
    "POOR_KEY",
    "RID_PREFIX",
    "WRONG_KEY",
    "FakeSetup",
    "Outcome",
    "console_script",
    "fake_setup",
    "invoke",
]


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def check_hygiene(stdout: str, stderr: str) -> None:
    """What must hold for every run: no key, no traceback, no base64 flood."""
    for stream in (stdout, stderr):
        assert CANARY not in stream, "an API key was printed"
        assert "Traceback" not in stream
        assert "base64,iVBOR" not in stream  # a PNG data URI printed in full


def invoke(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    obj: CliState | None = None,
    input: bytes | None = None,
) -> Outcome:
    """Run ``mai-image ARGS`` in-process (stderr is not a terminal: plain progress lines)."""
    result = CliRunner().invoke(cli, list(args), env=env, obj=obj, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an escaped exception is a bug in the CLI: show it
    check_hygiene(result.stdout, result.stderr)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def console_script() -> str:
    """The installed ``mai-image`` next to this Python (skip when not installed)."""
    script = shutil.which("mai-image", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the mai-image console script is not installed next to this Python")
    return script


@dataclass
class FakeSetup:
    """The CLI over a scripted fake gateway (``httpx.MockTransport``) and a fake clock."""

    gateway: Gateway
    clock: FakeClock
    state: CliState
    http: httpx.Client


def fake_setup(gateway: Gateway, handler: Handler | None = None) -> FakeSetup:
    """A :class:`CliState` whose client talks to ``gateway`` (or ``handler``) and never sleeps.

    Set ``PIXAZO_BASE_URL`` to ``tests.support.fakes.BASE`` for the gateway to answer.
    """
    clock = FakeClock()
    http = httpx.Client(transport=httpx.MockTransport(handler or gateway.handler))

    def factory(**kwargs: Any) -> MAIImageClient:
        return MAIImageClient(http_client=http, clock=clock, retry_policy=FAST_RETRY, **kwargs)

    return FakeSetup(gateway, clock, CliState(client_factory=factory), http)
