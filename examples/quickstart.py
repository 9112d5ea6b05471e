"""Generate an image with MAI Image 2.5 and save it: the smallest complete program.

With ``PIXAZO_API_KEY`` set, it uses the real gateway (``PIXAZO_BASE_URL`` optional). Without
a key, it starts the offline emulator in-process, so it runs anywhere: no key, no network.

    python examples/quickstart.py "a lighthouse on a cliff at dawn, watercolor"
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from mai_tools import JobStatus, MAIImageClient


@contextlib.contextmanager
def open_client() -> Iterator[MAIImageClient]:
    if os.environ.get("PIXAZO_API_KEY"):
        with MAIImageClient() as client:
            yield client
        return
    from mai_tools.emulator import run_emulator

    print("PIXAZO_API_KEY is not set: using the offline emulator.", file=sys.stderr)
    with run_emulator() as emu, MAIImageClient(emu.api_key, base_url=emu.base_url) as client:
        yield client


def show(status: JobStatus, elapsed: float) -> None:
    print(f"  {status.status.value:<10} {elapsed:5.1f}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prompt = " ".join(args) or "a lighthouse on a cliff at dawn, watercolor"
    with open_client() as client:
        result = client.generate(prompt, aspect_ratio="16:9", on_status=show)
        paths = client.save(result, "mai-images")
    print(f"request {result.request_id}")
    for url, path in zip(result.image_urls, paths, strict=True):
        print(f"{path}  <-  {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
