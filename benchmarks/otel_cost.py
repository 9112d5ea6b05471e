"""What OpenTelemetry adds to each job: nothing loaded, the API without an SDK, an SDK.

    python benchmarks/otel_cost.py               # 1000 jobs per mode, 3 rounds
    python benchmarks/otel_cost.py --jobs 3000 --rounds 5

One job is the sync client's ``generate`` (submit, two status reads) and ``save`` of its one
image, against an in-process ``httpx.MockTransport`` gateway with a fake clock (no sleeps, no
network, no job book), so what differs between the modes is the telemetry. Each mode runs in
its own interpreter, because what is imported is what is measured:

- ``off``: ``opentelemetry`` cannot be imported (a blocking import hook stands in for the
  extra not installed); the run checks that no OpenTelemetry module was loaded.
- ``api``: ``opentelemetry.trace`` and ``.metrics`` imported, no SDK (the no-op API: what an
  MCP server process has by default, since mcp imports the API).
- ``sdk``: the SDK with a SimpleSpanProcessor into an InMemorySpanExporter and an
  InMemoryMetricReader (5 spans and 4 metric updates per job).
- ``prom``: what ``mai-image-mcp --metrics`` sets up (:func:`mcp_server._metrics.install`: the
  SDK meter provider with the Prometheus reader; no tracer provider, so spans are the API's
  no-ops), plus the server's spend counter told of each job's finish, as its job book would;
  ``scrape`` is the CPU time of one ``/metrics`` rendering after the jobs.

What is timed is the process's CPU time per job (``time.process_time``: every thread, the
save's download thread too): telemetry costs CPU, and a job's CPU time moves far less with the
machine's load than its elapsed time (also shown). Inside each interpreter the jobs alternate
between telemetry on and off (``mai_tools._telemetry.enabled`` patched to False for every
other job), so the added cost is the difference of two medians taken side by side; the table
gives its median over the rounds, and each round's. ``off`` adds 0 by construction: what it
shows is that nothing was imported. Goals (issue 25): ``off`` imports nothing; ``sdk`` adds <= 1 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

GOAL_MS = 1.0
MODES = ("off", "api", "sdk", "prom")

CHILD = r"""
import json, statistics, sys, tempfile, time
mode, jobs = sys.argv[1], int(sys.argv[2])
if mode == "off":
    class NoOtel:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ImportError("blocked: stands in for the extra not installed")
    sys.meta_path.insert(0, NoOtel())
elif mode == "api":
    import opentelemetry.trace, opentelemetry.metrics
elif mode == "prom":
    import opentelemetry.trace
    from decimal import Decimal
    from mai_tools.jobbook import JobRecord
    from mcp_server._metrics import SpendMeter, install
    exposition = install()
    spend = SpendMeter(Decimal("0.04"), "USD", principals=True)
    finished = JobRecord(id="j", principal="local", surface="mcp", operation="generate",
                         fingerprint="f", fields={"num_images": 1}, prompt=None,
                         status="COMPLETED")
else:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
import httpx
from mai_tools import FakeClock, MAIImageClient
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
RID = "microsoft-mai-image-2-5_019d0000-0000-7000-8000-0000000000"
state = {"reads": 0}
def handler(request):
    if request.url.host == "cdn.example.com":
        return httpx.Response(200, content=PNG)
    if request.method == "POST":
        state["reads"] = 0
        return httpx.Response(202, json={"request_id": RID + "01", "status": "QUEUED"})
    state["reads"] += 1
    if state["reads"] < 2:
        return httpx.Response(200, json={"request_id": RID + "01", "status": "PROCESSING"})
    return httpx.Response(200, json={"request_id": RID + "01", "status": "COMPLETED",
        "output": {"media_url": ["https://cdn.example.com/a.png"], "media_type": "image/png"}})
client = MAIImageClient(api_key="k", job_book="off", clock=FakeClock(),
                        http_client=httpx.Client(transport=httpx.MockTransport(handler)))
folder = tempfile.mkdtemp()
import mai_tools._telemetry as telemetry
loaded_api = telemetry.enabled
samples = {True: [], False: []}
walls = []
for i in range(50 + 2 * jobs):
    on = i % 2 == 0  # alternate: each job with its telemetry, then one without
    telemetry.enabled = loaded_api if on else (lambda: False)
    t0, w0 = time.process_time(), time.perf_counter()
    result = client.generate("a lighthouse at dusk")
    client.save(result, folder)
    if mode == "prom" and on:
        spend("finished", finished)
    if i >= 50:
        samples[on].append(time.process_time() - t0)
        walls.append(time.perf_counter() - w0)
    if mode == "sdk" and i % 200 == 0:
        exporter.clear()  # memory stays flat (after the timed job)
client.close()
scrape = 0.0
if mode == "prom":
    t0 = time.process_time()
    body, _ = exposition.render("")
    scrape = time.process_time() - t0
    assert b"mai_tools_spend_estimated_total" in body, body
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
on, off = statistics.median(samples[True]), statistics.median(samples[False])
print(json.dumps({"on": on, "off": off, "added": on - off, "wall": statistics.median(walls),
                  "otel_modules": len(loaded), "scrape": scrape}))
"""


def run_mode(mode: str, jobs: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(jobs)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (modes alternate)")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            runs[mode].append(run_mode(mode, args.jobs))
    print(f"{'mode':<5} {'job':>8} {'added':>8} {'rounds':<26} {'wall':>8}  otel modules")
    added: dict[str, float] = {}
    for mode in MODES:
        added[mode] = statistics.median(r["added"] for r in runs[mode]) * 1000
        rounds = ", ".join(f"{r['added'] * 1000:.3f}" for r in runs[mode])
        job = statistics.median(r["on"] for r in runs[mode]) * 1000
        wall = statistics.median(r["wall"] for r in runs[mode]) * 1000
        modules = max(int(r["otel_modules"]) for r in runs[mode])
        print(f"{mode:<5} {job:8.3f} {added[mode]:8.3f} {rounds:<26} {wall:8.3f}  {modules:>12}")
    print("(ms per job; job and added: CPU time of the process, medians; wall: median elapsed)")
    scrape = statistics.median(r["scrape"] for r in runs["prom"]) * 1000
    print(f"prom: one /metrics rendering after the jobs: {scrape:.3f} ms CPU (median)")
    nothing = all(r["otel_modules"] == 0 for r in runs["off"])
    ok = nothing and added["sdk"] <= GOAL_MS
    print(f"goal: off imports nothing, sdk adds <= {GOAL_MS} ms per job: {'ok' if ok else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
