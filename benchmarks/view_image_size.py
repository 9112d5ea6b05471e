"""How large view_image's image is in a model's context: base64 characters per preview.

    python benchmarks/view_image_size.py              # 12 emulator images, every size
    python benchmarks/view_image_size.py --count 4

Generates 1024x1024 images on the emulator (in-process), views each through the MCP server
(in-process client) at the default size (384) and at 768 and 1024, and prints a markdown
section: base64 characters (min / median / max) and the preview's side and JPEG quality. Also
measures the worst case the budget exists for: incompressible noise, 1024 px, which the emulator
never draws (quality, then size, go down until it fits).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import tempfile

from mcp import Client
from mcp.types import ImageContent
from PIL import Image

from mai_tools._previews import model_preview, view_budget
from mai_tools.emulator import EmulatorConfig, run_emulator
from mcp_server import Settings, create_server

KEY = "sk-bench-0123456789abcdef"
SIZES = (384, 768, 1024)
PROMPTS = (
    "a red kite over a beach",
    "a lighthouse on a cliff at dawn",
    "a bowl of ramen, studio light",
    "a city street in the rain at night",
    "a watercolor fox in the snow",
    "an isometric pixel-art castle",
)


async def measure(count: int, base_url: str) -> dict[int, list[tuple[int, tuple[int, int]]]]:
    found: dict[int, list[tuple[int, tuple[int, int]]]] = {size: [] for size in SIZES}
    settings = Settings(api_key=KEY, base_url=base_url, preview="off")
    async with Client(create_server(settings)) as client:
        for n in range(count):
            prompt = f"{PROMPTS[n % len(PROMPTS)]} #{n}"
            made = await client.call_tool("generate_image", {"prompt": prompt})
            assert made.structured_content is not None
            request_id = made.structured_content["request_id"]
            for size in SIZES:
                viewed = await client.call_tool(
                    "view_image", {"request_id": request_id, "size": size}
                )
                image = viewed.content[1]
                assert isinstance(image, ImageContent)
                with Image.open(io.BytesIO(base64.b64decode(image.data))) as decoded:
                    found[size].append((len(image.data), decoded.size))
    return found


def noise() -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3)).save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["MAI_JOB_BOOK"] = os.path.join(home, "jobs.sqlite3")
        config = EmulatorConfig(api_keys=(KEY,), min_duration=0.05, max_duration=0.1)
        with run_emulator(config) as emu:
            found = asyncio.run(measure(args.count, emu.base_url))
    print(f"{args.count} emulator images (1024x1024 PNG), viewed over MCP:\n")
    print("| size | budget (base64 chars) | min | median | max | preview side |")
    print("|---|---|---|---|---|---|")
    for size, rows in found.items():
        lengths = [n for n, _ in rows]
        sides = sorted({max(s) for _, s in rows})
        print(
            f"| {size} | {view_budget(size):,} | {min(lengths):,} | "
            f"{int(statistics.median(lengths)):,} | {max(lengths):,} | "
            f"{', '.join(map(str, sides))} |"
        )
    raw = noise()
    print("\nIncompressible noise, 1024x1024:\n")
    print("| size | budget | base64 chars | preview side | JPEG quality |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        preview = model_preview(raw, size)
        encoded = len(base64.b64encode(preview.jpeg))
        print(
            f"| {size} | {view_budget(size):,} | {encoded:,} | "
            f"{max(preview.width, preview.height)} | {preview.quality} |"
        )


if __name__ == "__main__":
    main()
