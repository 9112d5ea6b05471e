"""The gallery app in a real browser (headless Chromium): real tool results from the emulator,
images from the emulator on loopback, and the app's own tool calls going to the real server.

The page is a minimal MCP Apps host (``tests/support/gallery_host.html``, written from the
ext-apps spec): it loads the app from another origin into a sandboxed iframe under the CSP the
server declares for it (as hosts do), answers ``ui/initialize``, sends the tool's input and
result, and forwards the app's ``tools/call`` to the MCP server through the test.
A screenshot is kept at ``$MAI_GALLERY_SCREENSHOT`` (CI keeps it as an artifact) or in the
test's temporary directory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import TextResourceContents
from playwright.async_api import Frame, Page, Request, async_playwright

from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from mcp_server._gallery import GALLERY_URI
from tests.support.browser import chromium
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY

HOST_PAGE = Path(__file__).resolve().parents[1] / "support" / "gallery_host.html"
SCREENSHOT_ENV = "MAI_GALLERY_SCREENSHOT"
WAIT_MS = 30_000  # generous: a busy machine is slow, never wrong


def _apps_client(settings: Settings) -> Client:
    return Client(
        create_server(settings),
        extensions=[advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})],
    )


def host_csp(ui_meta: dict[str, Any]) -> str:
    """The CSP a host puts on the app's document, from the resource's ``_meta.ui.csp``: inline
    script and style (the app is one file), images from the declared domains, nothing else."""
    domains = " ".join(ui_meta.get("csp", {}).get("resourceDomains", []))
    return (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        f"img-src data: {domains}; media-src {domains}; connect-src 'none'; "
        "frame-src 'none'; base-uri 'none'"
    )


@pytest.fixture
def slow_emulator() -> Iterator[RunningEmulator]:
    """Jobs that end only when the test says (never, here): a still-running answer."""
    with run_emulator(
        EmulatorConfig(api_keys=(KEY,), min_duration=60, max_duration=60), clock=ManualClock()
    ) as emu:
        yield emu


class Pages:
    """A loopback HTTP server for the host page and the app, on two origins (localhost and
    127.0.0.1, like a host's sandbox domain): loopback like the emulator's images, since
    Chromium refuses a page from a public address loading from loopback."""

    def __init__(self) -> None:
        self.app_html = ""
        self.csp = ""
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/host.html":
                    body, headers = HOST_PAGE.read_bytes(), {}
                elif self.path == "/gallery.html":
                    body = pages.app_html.encode()
                    headers = {"Content-Security-Policy": pages.csp}
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.host_url = f"http://localhost:{port}/host.html"
        self.app_url = f"http://127.0.0.1:{port}/gallery.html"

    @contextmanager
    def serving(self) -> Iterator[Pages]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join()


class Host:
    """The browser page acting as the MCP Apps host, and the MCP clients behind it."""

    def __init__(self, page: Page, pages: Pages) -> None:
        self.page = page
        self.pages = pages
        self.client: Client | None = None
        self.requests: list[tuple[str, str]] = []  # (frame URL, request URL)
        self.console: list[str] = []

    async def show(self, client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call ``tool`` on the server as a host would, then open the app on its result."""
        self.client = client
        resource = (await client.read_resource(GALLERY_URI)).contents[0]
        assert isinstance(resource, TextResourceContents)
        assert resource.mime_type == APP_MIME_TYPE
        self.pages.app_html = resource.text
        self.pages.csp = host_csp((resource.meta or {}).get("ui", {}))
        result = await client.call_tool(tool, arguments)
        wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        await self.page.evaluate(
            "(s) => window.startApp(s)",
            {"appUrl": self.pages.app_url, "tool": tool, "arguments": arguments, "result": wire},
        )
        await self.page.wait_for_function(
            "() => window.fromApp.some((m) => m.method === 'ui/notifications/initialized')",
            timeout=WAIT_MS,
        )
        return wire

    def app(self) -> Frame:
        frame = self.page.frame(url=self.pages.app_url)
        assert frame is not None
        return frame

    async def tool_calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = await self.page.evaluate("() => window.toolCalls")
        return calls

    async def call_server_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        assert self.client is not None
        result = await self.client.call_tool(name, arguments)
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)

    def on_request(self, request: Request) -> None:
        self.requests.append((request.frame.url, request.url))


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    executable = chromium()
    with Pages().serving() as pages:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable)
            try:
                context = await browser.new_context(viewport={"width": 760, "height": 900})
                page = await context.new_page()
                gallery_host = Host(page, pages)
                page.on("request", gallery_host.on_request)
                page.on("console", lambda m: gallery_host.console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: gallery_host.console.append(f"uncaught: {e}"))
                await page.expose_function("callServerTool", gallery_host.call_server_tool)
                await page.goto(pages.host_url)
                yield gallery_host
            finally:
                await browser.close()


async def _loaded_images(frame: Frame, count: int) -> list[dict[str, Any]]:
    # Locators, not wait_for_function: the app's CSP (no 'unsafe-eval') stops the latter.
    await frame.locator("img[data-loaded]").nth(count - 1).wait_for(timeout=WAIT_MS)
    images: list[dict[str, Any]] = await frame.evaluate(
        "() => [...document.images].map((i) => ({src: i.src, w: i.naturalWidth, "
        "h: i.naturalHeight, complete: i.complete}))"
    )
    return images


def _image_origin_only(host: Host, origins: list[str]) -> None:
    """Every request the app made went to its own document or to an image host."""
    app_url = host.pages.app_url
    from_app = [url for frame, url in host.requests if frame == app_url]
    assert from_app, "the app made no requests at all?"
    stray = [u for u in from_app if u != app_url and not u.startswith(tuple(origins))]
    assert not stray, stray


async def test_gallery_renders_edits_and_shows_job_states(
    host: Host, emulators: EmulatorPool, slow_emulator: RunningEmulator, tmp_path: Path
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=0.1, max_duration=0.2)
    origin = f"http://{urlsplit(emu.base_url).netloc}"
    settings = Settings(api_key=KEY, base_url=emu.base_url, resource_links=True)
    async with _apps_client(settings) as client:
        # Images from a real result, at full size from their URLs (the emulator's).
        prompt = "a lighthouse on a cliff at dusk"
        wire = await host.show(
            client, "generate_image", {"prompt": prompt, "num_images": 2, "aspect_ratio": "4:3"}
        )
        data = wire["structuredContent"]
        assert not [c for c in wire["content"] if c["type"] == "resource_link"]
        app = host.app()
        images = await _loaded_images(app, 2)
        assert [i["src"] for i in images] == data["image_urls"]
        assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
        caption = await app.locator("figure").first.inner_text()
        assert data["request_id"] in caption
        assert prompt in caption
        assert f"{images[0]['w']}×{images[0]['h']}" in caption

        # "Edit this": asks for an instruction, then the app calls edit_image via the host.
        await app.locator("figure").first.get_by_role("button", name="Edit this").click()
        await app.locator("#instruction").fill("make it night, with a full moon")
        await app.get_by_role("button", name="Edit this image").click()
        await app.locator("img").nth(2).wait_for(timeout=WAIT_MS)
        assert (await host.tool_calls())[0] == {
            "name": "edit_image",
            "arguments": {
                "prompt": "make it night, with a full moon",
                "image": data["image_urls"][0],
            },
        }
        edited = await _loaded_images(app, 3)
        assert edited[0]["w"] > 0  # the edit's image, shown first
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "gallery.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        await app.evaluate("() => window.scrollTo(0, 0)")
        await host.page.locator("#app").screenshot(path=str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")  # noqa: ASYNC240 (a test's file)
        # Open and download go through the host too (a sandboxed frame cannot do either).
        first = app.locator("section").last.locator("figure").first
        await first.get_by_role("button", name="Open").click()
        await first.get_by_role("button", name="Download").click()
        await host.page.wait_for_function(
            "() => window.fromApp.some((m) => m.method === 'ui/download-file')", timeout=WAIT_MS
        )
        asked = await host.page.evaluate(
            "() => window.fromApp.filter((m) => ['ui/open-link', 'ui/download-file']"
            ".includes(m.method)).map((m) => m.params)"
        )
        assert asked == [
            {"url": data["image_urls"][0]},
            {
                "contents": [
                    {
                        "type": "resource_link",
                        "uri": data["image_urls"][0],
                        "name": f"{data['request_id']}_1.png",
                        "mimeType": "image/png",
                    }
                ]
            },
        ]
        # "More like this": the same prompt again, through generate_image.
        original = app.locator("section").last.locator("figure").first
        await original.get_by_role("button", name="More like this").click()
        await app.locator("img").nth(3).wait_for(timeout=WAIT_MS)  # one more image
        again = (await host.tool_calls())[1]
        assert again["name"] == "generate_image"
        assert again["arguments"]["prompt"] == prompt
        await _loaded_images(app, 4)
        _image_origin_only(host, ["https://pub-582b7213209642b9b995c96c95a30381.r2.dev", origin])

        # get_image_job's result: its images with the job's prompt (from the book, via _meta).
        await host.show(client, "get_image_job", {"request_id": data["request_id"]})
        await _loaded_images(host.app(), 2)
        caption = await host.app().locator("figure").first.inner_text()
        assert prompt in caption
        assert await host.app().get_by_role("button", name="More like this").count() == 2

        # A failed job shows its state, not an empty gallery.
        await host.show(client, "generate_image", {"prompt": "a storm at sea [fail]"})
        failed = host.app().locator('.state[data-state="failed"]')
        await failed.wait_for(timeout=WAIT_MS)
        assert "Failed (FAILED)" in await failed.inner_text()

    # A still-running job shows its state and request id, and "Check again" asks for it.
    slow = Settings(api_key=KEY, base_url=slow_emulator.base_url, max_wait=0.3, preview="off")
    async with _apps_client(slow) as client:
        wire = await host.show(client, "generate_image", {"prompt": "a very slow painting"})
        rid = wire["structuredContent"]["request_id"]
        running = host.app().locator('.state[data-state="running"]')
        await running.wait_for(timeout=WAIT_MS)
        text = await running.inner_text()
        assert "Still running" in text
        assert rid in text
        await running.get_by_role("button", name="Check again").click()
        await host.app().locator('.state[data-state="running"]').nth(1).wait_for(timeout=WAIT_MS)
        assert (await host.tool_calls()) == [
            {"name": "get_image_job", "arguments": {"request_id": rid}}
        ]
    # No script error, no CSP violation, no failed load: the console stayed clean.
    assert not [m for m in host.console if m.startswith(("error", "uncaught"))], host.console
    assert KEY not in str(host.requests)
