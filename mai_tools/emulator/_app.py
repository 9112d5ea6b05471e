"""The emulator's ASGI app: the gateway's three endpoints, result files and admin endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pydantic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._constants import EDIT_PATH, GENERATE_PATH
from .._images import sniff_image_type
from .._models import EditRequest, GenerateRequest
from .._urls import split_url
from ._config import EmulatorConfig, Faults
from ._openapi import openapi_document
from ._render import MEDIA_TYPES, render
from ._state import Emulator, Job, iso

logger = logging.getLogger("mai_tools.emulator")

KEY_HEADER = "ocp-apim-subscription-key"
_MAX_BODY = 64 * 1024 * 1024


class DroppedConnection(Exception):
    """Raised after the response started: the server closes the connection mid-answer."""


class _DropResponse(Response):
    """Start a response, send part of it, then abort: the client sees an incomplete answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"512")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"request_id": "', "more_body": True})
        raise DroppedConnection("emulated dropped connection")


def _error(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def _retry_after(faults: Faults) -> dict[str, str]:
    if faults.retry_after_as_date:
        value = email.utils.formatdate(time.time() + faults.retry_after, usegmt=True)
    else:
        value = f"{faults.retry_after:g}"
    return {"Retry-After": value}


def _origin(request: Request, config: EmulatorConfig) -> str:
    if config.public_url:
        return config.public_url.rstrip("/")
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def _media_urls(origin: str, job: Job) -> list[str]:
    ext = job.output_format
    return [f"{origin}/files/{job.request_id}/{n + 1}.{ext}" for n in range(job.num_images)]


class EmulatorApp:
    """Request handlers bound to one :class:`Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self._webhook_client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ helpers

    async def _gate(self, request: Request, *, submit: bool) -> Response | str:
        """Record, delay, authenticate. Returns the key, or an error response."""
        key = request.headers.get(KEY_HEADER)
        self.emu.record_request(
            request.method, request.url.path, request.headers.get("host", ""), key
        )
        faults = self.emu.faults
        if self.emu.roll(faults.slow_rate):
            await anyio.sleep(faults.slow_seconds)
        if key is None:
            return _error(
                401,
                "Unauthorized",
                "Access denied due to missing subscription key. Make sure to include the "
                "Ocp-Apim-Subscription-Key header.",
            )
        if (
            key not in self.emu.config.api_keys
            and key not in faults.forbidden_keys
            and key not in faults.insufficient_balance_keys
        ):
            return _error(
                401,
                "Unauthorized",
                "Access denied due to invalid subscription key. Make sure to provide a valid key.",
            )
        if key in faults.forbidden_keys:
            return _error(403, "Forbidden", "This subscription may not use this model.")
        if submit and key in faults.insufficient_balance_keys:
            return _error(402, "Insufficient Balance", "Your wallet does not have enough balance.")
        return key

    def _status_body(
        self, job: Job, status: str, origin: str, *, inline: bool = False
    ) -> dict[str, Any]:
        done = status in ("COMPLETED", "FAILED", "ERROR")
        output = None
        if status == "COMPLETED":
            if inline:
                urls = [
                    f"data:{MEDIA_TYPES[job.output_format]};base64,"
                    + base64.b64encode(self._image(job, n)).decode("ascii")
                    for n in range(job.num_images)
                ]
            else:
                urls = _media_urls(origin, job)
            output = {"media_url": urls, "media_type": MEDIA_TYPES[job.output_format]}
        updated = min(time.time(), job.finished) if done else time.time()
        return {
            "request_id": job.request_id,
            "status": status,
            "model_id": job.model_id,
            "error": job.error if status in ("FAILED", "ERROR") else None,
            "output": output,
            "created_at": iso(job.created),
            "updated_at": iso(job.finished if done else updated),
            "completed_at": iso(job.finished) if done else None,
        }

    def _image(self, job: Job, index: int) -> bytes:
        cache_key = (job.request_id, index)
        data = self.emu.images.get(cache_key)
        if data is None:
            data = render(
                prompt=job.prompt,
                request_id=job.request_id,
                index=index,
                total=job.num_images,
                aspect_ratio=job.aspect_ratio,
                output_format=job.output_format,
                long_side=self.emu.config.long_side,
                source=job.source,
            )
            if len(self.emu.images) > 512:  # keep memory bounded; images are re-drawable
                self.emu.images.pop(next(iter(self.emu.images)))
            self.emu.images[cache_key] = data
        return data

    def _source_image(self, url: str, request: Request) -> bytes | Response | None:
        """Bytes of the edit source: decoded data URI, or one of our own /files/ images."""
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            if ";base64" not in head.lower():
                return _error(400, "Bad Request", "image_urls[0]: data URIs must be base64.")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return _error(400, "Bad Request", "image_urls[0]: invalid base64 in data URI.")
            if sniff_image_type(data) is None:
                return _error(
                    400,
                    "Bad Request",
                    "image_urls[0]: the data URI is not a PNG/JPEG/WEBP/GIF image.",
                )
            return data
        parts = split_url(url)
        if parts is None:  # e.g. "http://[": nothing we host; fetching it would fail later
            return None
        if parts.path.startswith("/files/") and parts.netloc == request.headers.get("host"):
            pieces = parts.path.split("/")
            if len(pieces) == 4:
                job = self.emu.job(pieces[2])
                index = pieces[3].split(".")[0]
                if job is not None and index.isdigit() and 1 <= int(index) <= job.num_images:
                    return self._image(job, int(index) - 1)
        return None  # an external URL: the emulator never fetches the internet

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            return _error(413, "Payload Too Large", "The request body exceeds 64 MiB.")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Bad Request", "The request body must be JSON.")
        if not isinstance(data, dict):
            return _error(400, "Bad Request", "The request body must be a JSON object.")
        return data

    def _rate_limited(self, request: Request, faults: Faults) -> Response:
        self.emu.record_rate_limit(request.url.path, faults.retry_after, faults.retry_after_as_date)
        return _error(429, "Too Many Requests", "Rate limit exceeded.", _retry_after(faults))

    # ------------------------------------------------------------------ endpoints

    async def submit(self, request: Request) -> Response:
        operation = "edit" if request.url.path == EDIT_PATH else "generate"
        gate = await self._gate(request, submit=True)
        if isinstance(gate, Response):
            self.emu.count_submission()
            return gate
        faults = self.emu.faults
        number = self.emu.count_submission()
        if number <= faults.rate_limit_first_submits or self.emu.roll(
            faults.rate_limit_submit_rate
        ):
            return self._rate_limited(request, faults)
        if self.emu.roll(faults.submit_error_rate):
            return _error(
                500, "Internal Server Error", "Emulated submit failure; no job was created."
            )
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        model = EditRequest if operation == "edit" else GenerateRequest
        try:
            parsed = model.model_validate(body)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return _error(400, "Bad Request", problems)
        source: bytes | None = None
        if isinstance(parsed, EditRequest):
            found = self._source_image(parsed.image_urls[0], request)
            if isinstance(found, Response):
                return found
            source = found
        webhook = request.headers.get("x-webhook-url")
        if webhook is not None:
            hook = split_url(webhook)
            if hook is None or hook.scheme not in ("http", "https") or not hook.netloc:
                return _error(400, "Bad Request", "X-Webhook-URL must be an http(s) URL.")
        job = self.emu.create_job(
            operation=operation,
            prompt=parsed.prompt,
            num_images=parsed.num_images,
            aspect_ratio=parsed.aspect_ratio,
            output_format=parsed.output_format,
            source=source,
            webhook_url=webhook,
        )
        origin = _origin(request, self.emu.config)
        if webhook:
            self._schedule_webhook(job, origin)
        if parsed.sync_mode and job.duration <= self.emu.config.sync_max_wait:
            await anyio.sleep(max(job.finished_mono - time.monotonic(), 0))
            result = self.emu.poll(job.request_id, count=False)  # answered inline, not polled
            assert result is not None
            body_out = await anyio.to_thread.run_sync(
                lambda: self._status_body(job, result[1], origin, inline=True)
            )
            return JSONResponse(body_out, status_code=200)
        polling_origin = (
            "https://gateway.elsewhere.invalid" if faults.foreign_polling_url else origin
        )
        return JSONResponse(
            {
                "request_id": job.request_id,
                "status": "QUEUED",
                "polling_url": f"{polling_origin}/v2/requests/status/{job.request_id}",
            },
            status_code=202,
        )

    async def status(self, request: Request) -> Response:
        gate = await self._gate(request, submit=False)
        if isinstance(gate, Response):
            return gate
        faults = self.emu.faults
        if self.emu.roll(faults.rate_limit_poll_rate):
            return self._rate_limited(request, faults)
        if self.emu.roll(faults.error_500_rate):
            return _error(500, "Internal Server Error", "Emulated server error.")
        if self.emu.roll(faults.error_502_rate):
            return HTMLResponse(
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
                "Gateway</h1></center></body></html>",
                status_code=502,
            )
        if self.emu.roll(faults.drop_rate):
            return _DropResponse()
        request_id = request.path_params["request_id"]
        found = self.emu.poll(request_id)
        if found is None:
            return _error(404, "Not Found", f"Request '{request_id[:100]}' not found.")
        job, status = found
        return JSONResponse(self._status_body(job, status, _origin(request, self.emu.config)))

    async def files(self, request: Request) -> Response:
        job = self.emu.job(request.path_params["request_id"])
        name: str = request.path_params["name"]
        stem, _, ext = name.partition(".")
        if (
            job is None
            or job.status_at(time.monotonic()) != "COMPLETED"
            or ext != job.output_format
        ):
            return _error(404, "Not Found", "No such file.")
        if not stem.isdigit() or not 1 <= int(stem) <= job.num_images:
            return _error(404, "Not Found", "No such file.")
        data = await anyio.to_thread.run_sync(self._image, job, int(stem) - 1)
        return Response(data, media_type=MEDIA_TYPES[job.output_format])

    # ------------------------------------------------------------------ admin

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                changes = await request.json()
                faults = self.emu.set_faults(**changes)
            except (ValueError, TypeError, pydantic.ValidationError) as exc:
                return _error(400, "Bad Request", str(exc))
            return JSONResponse(faults.model_dump(mode="json"))
        return JSONResponse(self.emu.faults.model_dump(mode="json"))

    async def admin_stats(self, request: Request) -> Response:
        return JSONResponse(self.emu.stats().model_dump(mode="json"))

    async def admin_reset(self, request: Request) -> Response:
        self.emu.reset()
        return JSONResponse({"reset": True})

    # ------------------------------------------------------------------ webhooks

    def _schedule_webhook(self, job: Job, origin: str) -> None:
        async def deliver() -> None:
            await anyio.sleep(max(job.finished_mono - time.monotonic(), 0))
            body = self._status_body(job, job.outcome, origin)
            delivery: dict[str, Any] = {"request_id": job.request_id, "url": job.webhook_url}
            try:
                if self._webhook_client is None:
                    self._webhook_client = httpx.AsyncClient(timeout=10)
                assert job.webhook_url is not None
                response = await self._webhook_client.post(job.webhook_url, json=body)
                delivery["status_code"] = response.status_code
            except httpx.HTTPError as exc:
                delivery["error"] = type(exc).__name__
                logger.warning("webhook for %s failed: %s", job.request_id, type(exc).__name__)
            delivery["at"] = time.time()
            self.emu.record_webhook(delivery)

        task = asyncio.get_running_loop().create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._webhook_client is not None:
            await self._webhook_client.aclose()


def create_app(config: EmulatorConfig | Emulator | None = None) -> Starlette:
    """The emulator as a Starlette app; its control handle is ``app.state.emulator``."""
    emulator = config if isinstance(config, Emulator) else Emulator(config or EmulatorConfig())
    handlers = EmulatorApp(emulator)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await handlers.aclose()

    routes = [
        Route(GENERATE_PATH, handlers.submit, methods=["POST"]),
        Route(EDIT_PATH, handlers.submit, methods=["POST"]),
        Route("/v2/requests/status/{request_id}", handlers.status, methods=["GET"]),
        Route("/files/{request_id}/{name}", handlers.files, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/_emulator/faults", handlers.admin_faults, methods=["GET", "PUT"]),
        Route("/_emulator/stats", handlers.admin_stats, methods=["GET"]),
        Route("/_emulator/reset", handlers.admin_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = emulator
    app.add_exception_handler(404, _not_found)
    return app


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, "Not Found", f"No route for {request.method} {request.url.path[:100]}.")


__all__ = ["DroppedConnection", "create_app"]
