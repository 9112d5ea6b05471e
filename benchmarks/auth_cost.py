"""What authentication adds to each HTTP request of the MCP server (goal, issue 22: <= 1 ms).

    python benchmarks/auth_cost.py                  # 2,000 checks per case
    python benchmarks/auth_cost.py --checks 10000

Two measures per case, each after a warm-up:

- ``check``: ``Authenticator.authenticate(token)`` alone (a named token: one ``stat`` of the
  tokens file and a SHA-256 lookup among 100 tokens; a JWT: header, cached key, signature,
  claims);
- ``request``: one ASGI request through the whole stack ``protect()`` builds (Starlette's
  AuthenticationMiddleware, the bearer backend, the SDK's RequireAuthMiddleware and
  AuthContextMiddleware) to an app that answers 204, minus the same request to the bare app.

The key set is the one :mod:`tests.support.oauth` serves on loopback, read once at start (the
cached case: no request fetches it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support.oauth

from mcp_server._auth import Authenticator, KeySet, OAuth, protect
from mcp_server._tokens import NamedToken, NamedTokens, digest, new_token, write
from tests.support.oauth import AUDIENCE, ISSUER, ec_key, ed_key, jwks_server, rsa_key, token

GOAL_MS = 1.0
_WARM_UP = 100


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _request(app: Any, bearer: str) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {bearer}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _times(action: Callable[[], Awaitable[object]], checks: int) -> list[float]:
    clock = time.perf_counter
    samples = []
    for i in range(_WARM_UP + checks):
        t0 = clock()
        await action()
        if i >= _WARM_UP:
            samples.append(clock() - t0)
    return samples


def _row(case: str, measure: str, samples: list[float], baseline: float = 0.0) -> str:
    ordered = sorted(samples)
    median = (statistics.median(ordered) - baseline) * 1000
    p90 = (ordered[int(len(ordered) * 0.9)] - baseline) * 1000
    verdict = "ok" if p90 <= GOAL_MS else "OVER"
    return f"| {case} | {measure} | {median:.3f} | {p90:.3f} | {verdict} |"


async def main(checks: int) -> None:
    keys = {"RS256": rsa_key(), "ES256": ec_key(), "EdDSA": ed_key()}
    with tempfile.TemporaryDirectory() as tmp, jwks_server(*keys.values()) as idp:
        named_tokens = {f"user-{i}": new_token() for i in range(100)}
        path = Path(tmp) / "tokens.json"
        write(path, {n: NamedToken(n, digest(t), "now") for n, t in named_tokens.items()})
        oauth = OAuth(
            issuer=ISSUER, audience=AUDIENCE, claim="sub", resource=AUDIENCE, keys=KeySet(idp.url)
        )
        static = new_token()
        verifier = Authenticator(static=static, named=NamedTokens(path), oauth=oauth)
        await verifier.prepare()
        cases = {
            "static token": static,
            "named token (100 in the file)": named_tokens["user-99"],
            **{f"JWT {alg}": token(key) for alg, key in keys.items()},
        }
        app = protect(_answer, verifier)
        bare = statistics.median(await _times(lambda: _request(_answer, static), checks))
        print("| case | measure | median ms | p90 ms | p90 <= 1 ms |")
        print("|---|---|---|---|---|")
        for case, bearer in cases.items():
            assert await _request(app, bearer) == 204, case

            def check(bearer: str = bearer) -> Awaitable[object]:
                return verifier.authenticate(bearer)

            def request(bearer: str = bearer) -> Awaitable[object]:
                return _request(app, bearer)

            print(_row(case, "check", await _times(check, checks)))
            print(_row(case, "request", await _times(request, checks), baseline=bare))
        assert idp.reads == 1, "the key set was read again: not the cached case"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    asyncio.run(main(parser.parse_args().checks))
