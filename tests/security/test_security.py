"""Security properties that cut across layers (the suite-wide log guard is in tests/conftest.py)."""

from __future__ import annotations

import base64
import logging
import pickle
from pathlib import Path

import httpx
import pytest

from mai_tools import (
    AsyncMAIImageClient,
    DownloadError,
    ImageResult,
    InvalidImageError,
    MAIImageClient,
    image_to_url,
)
from mai_tools._download import afetch_image
from tests.support.fakes import BASE, KEY, PNG_1PX, Gateway


def test_the_log_guard_is_active() -> None:
    """tests/conftest.py opens the root logger to DEBUG and scans every record."""
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert any(type(h).__name__ == "_LeakCatcher" for h in root.handlers)


def test_oversized_data_uri_refused_before_sending() -> None:
    gw = Gateway()
    big = "data:image/png;base64," + base64.b64encode(PNG_1PX + b"\0" * 4096).decode()
    with (
        MAIImageClient(
            KEY,
            base_url=BASE,
            max_input_image_bytes=1024,
            http_client=httpx.Client(transport=httpx.MockTransport(gw.handler)),
        ) as client,
        pytest.raises(InvalidImageError, match="limit"),
    ):
        client.edit("make it smaller", big)
    assert gw.requests == []
    with pytest.raises(InvalidImageError, match="limit"):
        image_to_url(big, max_bytes=1024)


def test_symlinked_input_is_read_as_its_target_only_by_the_trusted_client(tmp_path: Path) -> None:
    """The core client trusts its caller with paths; agent-facing tools confine them."""
    from mai_tools._images import agent_image_argument

    real = tmp_path / "real.png"
    real.write_bytes(PNG_1PX)
    link = tmp_path / "allowed" / "link.png"
    link.parent.mkdir()
    link.symlink_to(real)
    assert image_to_url(link).startswith("data:image/png;base64,")
    with pytest.raises(InvalidImageError, match="outside the allowed"):
        agent_image_argument(str(link), [tmp_path / "allowed"])
    with pytest.raises(InvalidImageError, match="not allowed"):
        agent_image_argument(str(real), [])


def test_key_not_in_pickles_or_reprs_of_clients() -> None:
    client = MAIImageClient(KEY)
    assert KEY not in repr(client)
    assert KEY not in str(vars(client._core))
    assert KEY not in repr(vars(client._core))
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        pickle.dumps(client)  # a pool with a key inside must not be serialised by accident
    client.close()
    aclient = AsyncMAIImageClient(KEY)
    assert KEY not in repr(aclient)


async def test_in_memory_fetch_is_capped_and_typed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/big.png":
            return httpx.Response(200, content=PNG_1PX + b"\0" * 5000)
        if request.url.path == "/page.png":
            return httpx.Response(200, text="<html/>", headers={"content-type": "text/html"})
        assert "Ocp-Apim-Subscription-Key" not in request.headers
        return httpx.Response(200, content=PNG_1PX, headers={"content-type": "image/png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        assert await afetch_image("https://cdn.test/ok.png", http_client=http) == PNG_1PX
        with pytest.raises(DownloadError, match="larger"):
            await afetch_image("https://cdn.test/big.png", http_client=http, max_bytes=1000)
        with pytest.raises(DownloadError, match="not an image"):
            await afetch_image("https://cdn.test/page.png", http_client=http)
        with pytest.raises(DownloadError, match="non-http"):
            await afetch_image("file:///etc/passwd", http_client=http)


def test_saved_file_names_never_come_from_the_server(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    result = ImageResult(request_id="../../../etc/cron.d/evil", image_urls=[uri])
    with MAIImageClient(KEY, base_url="https://gateway.pixazo.ai") as client:
        (path,) = client.save(result, tmp_path)
    assert path.parent == tmp_path
    assert path.name == "etc_cron.d_evil_1.png"


def test_refusing_a_non_image_never_quotes_its_bytes(tmp_path: Path) -> None:
    secret = b"password=hunter2 and more private notes"
    path = tmp_path / "notes.png"
    path.write_bytes(secret)
    for source in (secret, path, "data:image/png;base64," + base64.b64encode(secret).decode()):
        with pytest.raises(InvalidImageError) as info:
            image_to_url(source)
        assert "hunter2" not in str(info.value)
        assert "password" not in str(info.value)
