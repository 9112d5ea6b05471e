"""Telemetry off costs nothing: no OpenTelemetry module is imported by the package or a job.

Each check runs in a fresh interpreter (this test process has OpenTelemetry loaded).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

JOB = """
import sys, tempfile
import httpx
from mai_tools import MAIImageClient, AsyncMAIImageClient
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
RID = "microsoft-mai-image-2-5_019d0000-0000-7000-8000-000000000001"
def handler(request):
    if request.url.host == "cdn.example.com":
        return httpx.Response(200, content=PNG)
    if request.method == "POST":
        return httpx.Response(202, json={"request_id": RID, "status": "QUEUED"})
    return httpx.Response(200, json={"request_id": RID, "status": "COMPLETED",
        "output": {"media_url": ["https://cdn.example.com/a.png"], "media_type": "image/png"}})
with MAIImageClient(api_key="k", job_book="off",
                    http_client=httpx.Client(transport=httpx.MockTransport(handler))) as client:
    result = client.generate("a fox")
    client.save(result, tempfile.mkdtemp())
import asyncio
async def main():
    transport = httpx.MockTransport(handler)
    async with AsyncMAIImageClient(api_key="k", job_book="off",
                                   http_client=httpx.AsyncClient(transport=transport)) as client:
        result = await client.generate("a fox")
        await client.save(result, tempfile.mkdtemp())
asyncio.run(main())
"""

BLOCK = """
import sys
class NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError("opentelemetry is not installed here")
        return None
sys.meta_path.insert(0, NoOtel())
"""

CHECK = """
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("import sys, mai_tools", id="import"),
        pytest.param(JOB, id="a-job-with-the-api-installed"),
        pytest.param(BLOCK + JOB, id="a-job-without-opentelemetry"),
    ],
)
def test_no_opentelemetry_module_is_imported(script: str) -> None:
    code = textwrap.dedent(script) + CHECK
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
