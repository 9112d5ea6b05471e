"""The gallery (MCP Apps) as a client sees it: the tools bound to one ``ui://`` resource, the
resource served with its CSP, the app self-contained and small, Apps clients' results without
resource links, and every other client's answer exactly as before.
(The app itself runs in a real browser in ``test_gallery_browser.py``.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import CallToolResult, ResourceLink, TextResourceContents

from mcp_server import Settings, create_server
from mcp_server._gallery import (
    CDN_ORIGIN,
    GALLERY_TOOLS,
    GALLERY_URI,
    JOB_META,
    MAX_APP_BYTES,
    gallery_html,
    image_origins,
)
from tests.mcp.test_mcp_tasks import TasksClient
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY

APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})


def _dump(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_are_bound_to_the_served_gallery(emulators: EmulatorPool, mode: Any) -> None:
    emu = emulators(api_keys=(KEY,))
    settings = Settings(api_key=KEY, base_url=emu.base_url)
    async with Client(create_server(settings), mode=mode, extensions=[APPS]) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        listed = (await client.list_resources()).resources
        contents = (await client.read_resource(GALLERY_URI)).contents
        caps = client.server_capabilities
    for name, tool in tools.items():
        expected = {"ui": {"resourceUri": GALLERY_URI}} if name in GALLERY_TOOLS else None
        assert tool.meta == expected, name
    assert set(GALLERY_TOOLS) == {"generate_image", "edit_image", "get_image_job"}
    assert [(r.uri, r.mime_type) for r in listed] == [(GALLERY_URI, APP_MIME_TYPE)]
    assert caps is not None
    assert caps.resources is not None
    (content,) = contents
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == APP_MIME_TYPE
    assert content.text == gallery_html()
    assert content.meta is not None
    # The images' hosts, and nothing to connect to: the app talks only to its host.
    assert content.meta["ui"]["csp"] == {"resourceDomains": [CDN_ORIGIN, emu.base_url]}
    assert KEY not in content.text
    assert KEY not in json.dumps([t.model_dump(mode="json") for t in tools.values()])


def test_the_csp_names_the_emulator_only_when_it_is_the_gateway() -> None:
    assert image_origins(Settings()) == [CDN_ORIGIN]
    assert image_origins(Settings(base_url="https://gateway.pixazo.ai")) == [CDN_ORIGIN]
    assert image_origins(Settings(base_url="http://127.0.0.1:8123/")) == [
        CDN_ORIGIN,
        "http://127.0.0.1:8123",
    ]


def test_the_app_is_one_small_self_contained_file() -> None:
    html = gallery_html()
    assert len(html.encode()) <= MAX_APP_BYTES
    # No script, style sheet, font or frame from elsewhere, and no network API: the app
    # loads only the images named in a result, over the CSP's resourceDomains.
    assert not re.search(r"<(script|link|iframe|object|embed)\b[^>]*\b(src|href)=", html, re.I)
    for api in ("fetch(", "XMLHttpRequest", "WebSocket", "EventSource", "sendBeacon", "import("):
        assert api not in html, api
    assert "@import" not in html
    assert "url(http" not in html
    # Text from a result is set as text, never parsed as HTML.
    assert "innerHTML" not in html
    assert "insertAdjacentHTML" not in html


async def test_apps_clients_get_no_resource_links_and_others_the_same_answer(
    emulators: EmulatorPool,
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=0.05, max_duration=0.1)
    settings = Settings(api_key=KEY, base_url=emu.base_url, resource_links=True, preview="off")
    server = create_server(settings)
    async with Client(server, extensions=[APPS]) as apps_client:
        made = await apps_client.call_tool(
            "generate_image", {"prompt": "two foxes", "num_images": 2}
        )
        assert made.structured_content is not None
        rid = made.structured_content["request_id"]
        shown = await apps_client.call_tool("get_image_job", {"request_id": rid})
    async with Client(server) as plain_client:
        plain = await plain_client.call_tool("get_image_job", {"request_id": rid})
    assert not [c for c in made.content if isinstance(c, ResourceLink)]
    links = [c for c in plain.content if isinstance(c, ResourceLink)]
    assert [link.uri for link in links] == made.structured_content["image_urls"]
    # The same answer otherwise: text first, the same structured content; and, for the view
    # only, the job's tool and arguments (the get_image_job call itself has only its id).
    assert JOB_META not in (plain.meta or {})
    assert shown.meta is not None
    assert shown.meta.pop(JOB_META) == {
        "tool": "generate_image",
        "arguments": {
            "prompt": "two foxes",
            "num_images": 2,
            "aspect_ratio": "auto",
            "output_format": "png",
        },
    }
    unlinked = [c for c in plain.content if not isinstance(c, ResourceLink)]
    assert _dump(shown) == _dump(plain.model_copy(update={"content": unlinked}))
    assert KEY not in json.dumps([_dump(made), _dump(shown)])


async def test_an_edit_jobs_source_image_reaches_the_view_only_as_a_url(
    emulators: EmulatorPool,
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=0.05, max_duration=0.1)
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    async with Client(create_server(settings), extensions=[APPS]) as client:
        made = await client.call_tool("generate_image", {"prompt": "a blue door"})
        assert made.structured_content is not None
        source = made.structured_content["image_urls"][0]
        edited = await client.call_tool("edit_image", {"prompt": "paint it red", "image": source})
        assert edited.structured_content is not None
        rid = edited.structured_content["request_id"]
        shown = await client.call_tool("get_image_job", {"request_id": rid})
        unknown = await client.call_tool("get_image_job", {"request_id": rid[:-4] + "0000"})
    assert shown.meta is not None
    job = shown.meta[JOB_META]
    assert job["tool"] == "edit_image"
    assert job["arguments"]["image"] == source
    assert job["arguments"]["prompt"] == "paint it red"
    assert JOB_META not in (unknown.meta or {})  # no job in the book: nothing added


async def test_a_tasks_result_to_an_apps_client_has_no_resource_links(
    emulators: EmulatorPool,
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=0.05, max_duration=0.1)
    settings = Settings(api_key=KEY, base_url=emu.base_url, resource_links=True, preview="off")
    tasks = TasksClient()
    async with Client(create_server(settings), extensions=[tasks, APPS]) as client:
        result = await client.call_tool("generate_image", {"prompt": "a task for the gallery"})
    assert tasks.created  # it went through tasks/get
    assert result.structured_content is not None
    assert result.structured_content["done"] is True
    assert not [c for c in result.content if isinstance(c, ResourceLink)]
