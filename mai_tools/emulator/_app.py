"""The emulator's ASGI app: the gateway's three endpoints, result files and admin endpoints.

Errors come in the two shapes the real gateway uses: the API gateway in front (Azure API
Management: key checks, unknown routes, rate limits, quotas) answers
``{"statusCode": 401, "message": "..."}``; Pixazo behind it (validation, balance, job errors,
an unknown request id on the status route, which is a matched route) answers
``{"error": "...", "message": "..."}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final

import anyio
import pydantic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._images import sniff_image_type
from .._models import OPERATIONS, EditRequest, JobRequest
from .._urls import split_url
from ._callbacks import (
    CallbackError,
    CallbackSender,
    callback_target,
    is_loopback_host,
    under,
)
from ._config import EmulatorConfig, Faults
from ._openapi import openapi_document
from ._render import MEDIA_TYPES, SourceTooLargeError, prepare_source, render
from ._state import Emulator, Job, iso

logger = logging.getLogger("mai_tools.emulator")

KEY_HEADER = "ocp-apim-subscription-key"
_MAX_ADMIN_BODY = 1024 * 1024
_SENDERS = 32  # callbacks in flight at once, each on a kept-alive connection
_PER_RECEIVER = 8  # of those, to one receiver: a stalled one holds no more than these

# Azure API Management's own messages, word for word (shared/notes/real-world.md).
MISSING_KEY: Final = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
INVALID_KEY: Final = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an "
    "active subscription."
)
NO_ROUTE: Final = "Resource not found"


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
    """An error in Pixazo's shape (the service behind the gateway)."""
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def _gateway_error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in Azure API Management's shape (the gateway in front of Pixazo)."""
    return JSONResponse(
        {"statusCode": status, "message": message}, status_code=status, headers=headers
    )


def _seconds(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _hms(seconds: float) -> str:
    whole = math.ceil(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _too_large(cap: int) -> Response:
    # Close the connection: the client may still be sending, and we will not read the rest.
    return _error(
        413,
        "Payload Too Large",
        f"The request body exceeds {cap:,} bytes ({cap / 1048576:g} MiB).",
        headers={"Connection": "close"},
    )


async def _read_body(request: Request, cap: int) -> bytes | Response:
    """The body, read in chunks and given up on at ``cap`` bytes (never buffered past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return _too_large(cap)
    body = bytearray()
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > cap:
                return _too_large(cap)
    return bytes(body)


def _retry_after(faults: Faults, now: float) -> dict[str, str]:
    if faults.retry_after_as_date:
        value = email.utils.formatdate(now + faults.retry_after, usegmt=True)
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
        self._callbacks = CallbackSender(
            timeout=emulator.config.webhook_timeout,
            max_idle=_SENDERS,
            per_receiver=_PER_RECEIVER,
            max_in_flight=_SENDERS,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # Decoding an edit source can take a few hundred MB for a big (allowed) image: one at
        # a time keeps the peak at one image's worth.
        self._decoding = anyio.CapacityLimiter(1)

    # ------------------------------------------------------------------ helpers

    async def _gate(self, request: Request, *, submit: bool) -> Response | str:
        """Record, delay, authenticate. Returns the key, or an error response."""
        key = request.headers.get(KEY_HEADER)
        self.emu.record_request(
            request.method, request.url.path, request.headers.get("host", ""), key
        )
        faults = self.emu.faults
        if self.emu.roll(faults.slow_rate):
            await anyio.sleep(faults.slow_seconds)  # the network's time: real, not the clock's
        if key is None:
            return _gateway_error(401, MISSING_KEY)
        if (
            key not in self.emu.config.api_keys
            and key not in faults.forbidden_keys
            and key not in faults.insufficient_balance_keys
        ):
            return _gateway_error(401, INVALID_KEY)
        replenished_in = self.emu.quota_left(key)
        if replenished_in is not None:
            return _gateway_error(
                403,
                f"Out of call volume quota. Quota will be replenished in {_hms(replenished_in)}.",
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
        now = self.emu.clock.time()
        updated = min(now, job.finished) if done else now
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
        data = self.emu.cached_image(job.request_id, index)
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
                source_size=job.source_size,
            )
            self.emu.cache_image(job.request_id, index, data)
        return data

    def _source(
        self, url: str, request: Request
    ) -> tuple[bytes | None, tuple[int, int] | None] | Response:
        """The edit source, checked and shrunk for keeping (runs in a worker thread)."""
        found = self._source_image(url, request)
        if isinstance(found, Response):
            return found
        if found is None:  # an external URL: nothing to draw from
            return None, None
        config = self.emu.config
        try:
            return prepare_source(
                found, long_side=config.long_side, max_pixels=config.max_source_pixels
            )
        except SourceTooLargeError as exc:
            return _error(400, "Bad Request", str(exc))

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

    async def _body(self, request: Request, cap: int) -> dict[str, Any] | Response:
        raw = await _read_body(request, cap)
        if isinstance(raw, Response):
            return raw
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Bad Request", "The request body must be JSON.")
        except RecursionError:  # nested deeper than the parser goes: a 400, not a traceback
            return _error(400, "Bad Request", "The request body is nested too deeply.")
        if not isinstance(data, dict):
            return _error(400, "Bad Request", "The request body must be a JSON object.")
        return data

    def _rate_limited(self, request: Request, faults: Faults) -> Response:
        self.emu.record_rate_limit(request.url.path, faults.retry_after, faults.retry_after_as_date)
        return _gateway_error(
            429,
            f"Rate limit is exceeded. Try again in {_seconds(faults.retry_after)} seconds.",
            _retry_after(faults, self.emu.clock.time()),
        )

    # ------------------------------------------------------------------ endpoints

    def submitter(self, model: type[JobRequest]) -> Callable[[Request], Awaitable[Response]]:
        """The POST handler of one operation (its route is ``model.path``)."""

        async def submit(request: Request) -> Response:
            return await self.submit(request, model)

        return submit

    async def submit(self, request: Request, model: type[JobRequest]) -> Response:
        operation = model.operation
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
        body = await self._body(request, self.emu.config.max_body_bytes)
        if isinstance(body, Response):
            return body
        try:
            parsed = model.model_validate(body)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return _error(400, "Bad Request", problems)
        source: bytes | None = None
        source_size: tuple[int, int] | None = None
        if isinstance(parsed, EditRequest):
            url = parsed.image_urls[0]
            found = await anyio.to_thread.run_sync(
                self._source, url, request, limiter=self._decoding
            )
            if isinstance(found, Response):
                return found
            source, source_size = found
        webhook = request.headers.get("x-webhook-url")
        if webhook is not None:
            try:
                callback_target(webhook)  # a URL the callback could never be sent to
            except CallbackError as exc:
                reason = str(exc).removeprefix("InvalidURL: ")
                return _error(400, "Bad Request", f"X-Webhook-URL: {reason}.")
        job = self.emu.create_job(
            operation=operation,
            prompt=parsed.prompt,
            num_images=parsed.num_images,
            aspect_ratio=parsed.aspect_ratio,
            output_format=parsed.output_format,
            source=source,
            source_size=source_size,
            webhook_url=webhook,
        )
        origin = _origin(request, self.emu.config)
        if webhook:
            self._schedule_webhook(job, origin)
        if parsed.sync_mode and job.duration <= self.emu.config.sync_max_wait:
            clock = self.emu.clock
            await clock.sleep(job.finished_mono - clock.monotonic())
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
        faults = self.emu.faults
        number = self.emu.count_download()
        if number <= faults.cdn_rate_limit_first or self.emu.roll(faults.cdn_rate_limit_rate):
            # Cloudflare's rate limit, as r2.dev answers it: plain text, no JSON.
            self.emu.record_rate_limit(
                request.url.path, faults.retry_after, faults.retry_after_as_date
            )
            return PlainTextResponse(
                "error code: 1015",
                status_code=429,
                headers=_retry_after(faults, self.emu.clock.time()),
            )
        job = self.emu.job(request.path_params["request_id"])
        name: str = request.path_params["name"]
        stem, _, ext = name.partition(".")
        if (
            job is None
            or job.status_at(self.emu.clock.monotonic()) != "COMPLETED"
            or ext != job.output_format
        ):
            return _error(404, "Not Found", "No such file.")
        if not stem.isdigit() or not 1 <= int(stem) <= job.num_images:
            return _error(404, "Not Found", "No such file.")
        data = await anyio.to_thread.run_sync(self._image, job, int(stem) - 1)
        return Response(data, media_type=MEDIA_TYPES[job.output_format])

    # ------------------------------------------------------------------ admin

    def _admin_refusal(self, request: Request) -> Response | None:
        """Admin endpoints take one of the emulator's keys (``api_keys``), like the API."""
        key = request.headers.get(KEY_HEADER)
        if key is None:
            return _gateway_error(401, MISSING_KEY)
        if key not in self.emu.config.api_keys:
            return _gateway_error(401, INVALID_KEY)
        return None

    async def admin_faults(self, request: Request) -> Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        if request.method == "PUT":
            changes = await self._body(request, _MAX_ADMIN_BODY)
            if isinstance(changes, Response):
                return changes
            try:
                faults = self.emu.set_faults(**changes)
            except (ValueError, TypeError, pydantic.ValidationError) as exc:
                return _error(400, "Bad Request", str(exc))
            return JSONResponse(faults.model_dump(mode="json"))
        return JSONResponse(self.emu.faults.model_dump(mode="json"))

    async def admin_stats(self, request: Request) -> Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        return JSONResponse(self.emu.stats().model_dump(mode="json"))

    async def admin_reset(self, request: Request) -> Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        self.emu.reset()
        return JSONResponse({"reset": True})

    # ------------------------------------------------------------------ webhooks

    def _webhook_refusal(self, url: str) -> str | None:
        """Why a callback may not go to ``url`` (None: it may)."""
        parts = split_url(url)
        if not self.emu.config.allow_remote_webhooks and not is_loopback_host(
            parts.hostname if parts is not None else None
        ):
            return (
                "not a loopback address; the emulator sends callbacks only to 127.0.0.0/8, ::1 "
                "or localhost unless started with allow_remote_webhooks "
                "(--allow-remote-webhooks)"
            )
        only_to = self.emu.faults.webhook_only_to
        if only_to and not under(url, only_to):
            return "not under webhook_only_to (--webhook-only-to)"
        return None

    def _schedule_webhook(self, job: Job, origin: str) -> None:
        clock = self.emu.clock

        async def deliver() -> None:
            assert job.webhook_url is not None
            url = job.webhook_url
            await clock.sleep(job.finished_mono - clock.monotonic())
            if not self.emu.current(job):  # reset() forgot the job while it ran
                return
            faults = self.emu.faults  # the faults in force when the callback is due
            record: dict[str, Any] = {"request_id": job.request_id, "url": url}
            reason = self._webhook_refusal(url)
            if reason is not None:
                logger.warning("webhook for %s not sent: %s", job.request_id, reason)
                self.emu.record_webhook({**record, "outcome": "refused", "reason": reason}, job)
                return
            if self.emu.roll(faults.webhook_drop_rate):
                self.emu.record_webhook({**record, "outcome": "dropped"}, job)
                return
            if self.emu.roll(faults.webhook_delay_rate):
                await clock.sleep(faults.webhook_delay_seconds)
            copies = 2 if self.emu.roll(faults.webhook_duplicate_rate) else 1
            body = json.dumps(self._status_body(job, job.outcome, origin)).encode()
            for attempt in range(1, copies + 1):
                if not self.emu.current(job):
                    return
                delivery = {**record, "attempt": attempt}
                try:
                    status_code = await self._callbacks.post_json(url, body)
                    delivery.update(outcome="sent", status_code=status_code)
                except CallbackError as exc:
                    delivery.update(outcome="failed", error=str(exc))
                    logger.warning("webhook for %s failed: %s", job.request_id, exc)
                delivery["at"] = clock.time()
                self.emu.record_webhook(delivery, job)

        task = asyncio.get_running_loop().create_task(deliver())
        self.emu.webhook_scheduled()
        self._tasks.add(task)
        task.add_done_callback(self._over)

    def _over(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.emu.webhook_over()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._callbacks.aclose()


def create_app(config: EmulatorConfig | Emulator | None = None) -> Starlette:
    """The emulator as a Starlette app; its control handle is ``app.state.emulator``."""
    emulator = config if isinstance(config, Emulator) else Emulator(config or EmulatorConfig())
    handlers = EmulatorApp(emulator)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await handlers.aclose()

    routes = [
        *(
            Route(cls.path, handlers.submitter(cls), methods=["POST"])
            for cls in OPERATIONS.values()
        ),
        Route("/v2/requests/status/{request_id}", handlers.status, methods=["GET"]),
        Route("/files/{request_id}/{name}", handlers.files, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/_emulator/faults", handlers.admin_faults, methods=["GET", "PUT"]),
        Route("/_emulator/stats", handlers.admin_stats, methods=["GET"]),
        Route("/_emulator/reset", handlers.admin_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = emulator
    # No operation matched (path or method): API Management answers 404 itself.
    app.add_exception_handler(404, _no_route)
    app.add_exception_handler(405, _no_route)
    return app


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def _no_route(request: Request, exc: Exception) -> Response:
    return _gateway_error(404, NO_ROUTE)


__all__ = ["DroppedConnection", "create_app"]
