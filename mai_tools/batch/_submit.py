"""Sending one line: the money rules of the batch.

The intent is journaled *before* the POST (a crash after it leaves the line ``submitting``,
which the next run reports UNKNOWN instead of sending it again). A POST that may have reached
the gateway (a 5xx, an unreadable answer, a connection lost after sending: the client's
``may_have_arrived``) makes the line UNKNOWN, never re-sent unless the user asks. Only a POST
that certainly did nothing (429, 402, 401/403, 404, a refusal, a connection never made) gives
its images back to the budget; a connection never made is tried again a few times.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Final

import pydantic

from .._async_client import AsyncMAIImageClient
from .._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from .._images import image_to_url
from .._models import EditRequest, GenerateRequest, Job
from ._input import BatchItem, image_source
from ._journal import Row
from ._state import RunState, Stopped

SUBMIT_CONNECT_ATTEMPTS: Final = 3
"""Tries of one line whose POST could not even connect (certainly not sent)."""
UNREACHABLE_AFTER: Final = 20
"""Consecutive submissions that could not connect before the run stops submitting."""


class Submitter:
    """Sends lines through ``client``, recording each step in ``state``'s journal."""

    def __init__(
        self,
        state: RunState,
        client: AsyncMAIImageClient,
        *,
        base_dir: Path,
        sync_intents: bool,
    ) -> None:
        self._state = state
        self._client = client
        self._base_dir = base_dir
        self._sync_intents = sync_intents
        self._max_input = client.options.max_input_image_bytes
        self._connect_failures: dict[str, int] = {}
        self._consecutive_unreachable = 0

    async def submit(self, row: Row, item: BatchItem) -> None:
        """Send ``item`` (the line of ``row``, whose images the budget already counts)."""
        state = self._state
        try:
            await state.acquire()
            # The intent is on disk before the POST: a crash after this point leaves the line
            # "submitting", which the next run reports as UNKNOWN instead of sending it again.
            state.record(row, durable=self._sync_intents, state="submitting", error=None)
        except Stopped:
            state.images_requested -= row.num_images
            raise
        try:
            job = await self._post(item)
        except (pydantic.ValidationError, InvalidArgumentError) as exc:
            state.images_requested -= row.num_images
            state.record(row, state="invalid", status="INVALID", error=_reason(exc))
            return
        except RateLimitError as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.submits.appendleft(row)
            state.rate_limited(exc, "a submission")
            return
        except InsufficientBalanceError as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.balance = True
            state.hold(f"no balance (HTTP 402: {exc}); waiting for the jobs already submitted")
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.fail(f"{exc}; nothing is lost: fix the key and rerun the same command")
            return
        except NotFoundError as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.fail(f"{exc} (the submit path does not exist: is the base URL right?)")
            return
        except (ServerError, APIResponseError) as exc:
            state.gateway_trouble = True
            state.record(row, state="unknown", status="UNKNOWN", error=_unknown(exc))
            return
        except APIStatusError as exc:  # 400 and any other 4xx: refused, so nothing was created
            state.images_requested -= row.num_images
            state.record(row, state="invalid", status="INVALID", error=f"gateway refused: {exc}")
            return
        except APIConnectionError as exc:
            if exc.may_have_arrived:
                state.gateway_trouble = True
                state.record(row, state="unknown", status="UNKNOWN", error=_unknown(exc))
                return
            state.images_requested -= row.num_images
            await self._not_sent(row, exc)
            return
        self._consecutive_unreachable = 0
        state.submitted_now += 1
        state.submitted_at[row.id] = time.monotonic()
        state.record(
            row, state="submitted", status=_job_status(job), request_id=job.request_id, error=None
        )
        state.emit("submitted", f"{row.id}: submitted as {job.request_id}", row.id)

    async def _post(self, item: BatchItem) -> Job:
        fields = {
            "prompt": item.prompt,
            "num_images": item.num_images,
            "aspect_ratio": item.aspect_ratio,
            "output_format": item.output_format,
        }
        if item.image is None:
            return await self._client.submit(GenerateRequest.model_validate(fields))
        source = image_source(item.image, self._base_dir)
        url = await asyncio.to_thread(image_to_url, source, max_bytes=self._max_input)
        return await self._client.submit(
            EditRequest.model_validate({**fields, "image_urls": [url]})
        )

    async def _not_sent(self, row: Row, exc: APIConnectionError) -> None:
        """The POST certainly never left (no connection): try the line again later."""
        state = self._state
        state.gateway_trouble = True
        self._consecutive_unreachable += 1
        attempts = self._connect_failures.get(row.id, 0) + 1
        self._connect_failures[row.id] = attempts
        state.record(row, state="pending", error=f"not submitted: {exc}")
        if self._consecutive_unreachable >= UNREACHABLE_AFTER:
            state.hold(f"the gateway cannot be reached ({exc})")
            return
        if attempts < SUBMIT_CONNECT_ATTEMPTS:
            state.submits.append(row)
            delay = state.retry.backoff(attempts, None, state.rng)
            state.emit("retrying", f"{row.id}: not sent ({exc}); retrying in {delay:.1f}s", row.id)
            await state.sleep(delay)


def _job_status(job: Job) -> str:
    return job.status.value if job.status.value in ("QUEUED", "PROCESSING") else "QUEUED"


def _reason(exc: pydantic.ValidationError | InvalidArgumentError) -> str:
    if isinstance(exc, pydantic.ValidationError):
        exc = InvalidArgumentError.from_validation(exc)
    return str(exc)


def _unknown(exc: Exception) -> str:
    return (
        f"{exc} The gateway may have received this line: a job may exist (and be charged). "
        "It is not sent again unless you rerun with --resubmit-unknown."
    )
