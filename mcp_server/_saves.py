"""A finished task's images, saved at most once: ``tasks/get`` is read again and again.

The first read that finds the job COMPLETED saves its images into ``output_dir`` within what is
left of ``max_wait``; later reads (concurrent ones included) answer with those files, or, when
that save failed or ran out of time, with the URLs and why they were not saved. The memory is
this server's; another server sharing the job book finds the files in the book's record.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import anyio

from mai_tools import AsyncMAIImageClient, ImageResult
from mai_tools._agent import asave_or_report
from mai_tools.jobbook import JobRecord

from ._settings import Settings

REMEMBERED_SAVES = 4096
"""How many finished tasks' saves (files, or why not saved) a server remembers, newest kept."""
SAVE_BUSY = "another read of this task was still saving them when this one had to answer"


class TaskSaves:
    """Each finished task's save (files, or why not saved), made once and then reused."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._saves: OrderedDict[str, tuple[list[Path], str | None]] = OrderedDict()
        self._saving: dict[str, anyio.Lock] = {}

    def _known(
        self, request_id: str, record: JobRecord | None, count: int
    ) -> tuple[list[Path], str | None] | None:
        """What an earlier read of this task saved (this server's memory, else the book's
        record of the files, if they are all still there), or None: never saved yet."""
        known = self._saves.get(request_id)
        if known is not None:
            self._saves.move_to_end(request_id)
            return known
        if record is not None and record.paths and len(record.paths) == count:
            paths = [Path(p) for p in record.paths]
            if all(p.is_file() for p in paths):
                return paths, None
        return None

    async def save(
        self,
        api: AsyncMAIImageClient,
        result: ImageResult,
        record: JobRecord | None,
        started: float,
    ) -> tuple[list[Path], str | None]:
        """Save a finished task's images at most once, within what is left of ``max_wait``.

        ``tasks/get`` is read again and again: a later read answers with the files the first
        one saved, or with the URLs and why they were not saved (a stalled image host costs
        one read its ``max_wait``, never every read a download).
        """
        directory = self.settings.output_dir
        rid = result.request_id
        if directory is None:
            return [], None
        known = self._known(rid, record, len(result.image_urls))
        if known is not None:
            return known
        lock = self._saving.setdefault(rid, anyio.Lock())
        locked = False
        with anyio.move_on_after(self.settings.max_wait - (time.monotonic() - started)):
            await lock.acquire()
            locked = True
        if not locked:
            return [], SAVE_BUSY
        try:
            known = self._known(rid, record, len(result.image_urls))
            if known is not None:
                return known
            left = self.settings.max_wait - (time.monotonic() - started)
            saved = await asave_or_report(api, result, directory, timeout=left)
            if left > 0:  # tried: its answer stands for every later read
                self._saves[rid] = saved
                while len(self._saves) > REMEMBERED_SAVES:
                    self._saves.popitem(last=False)
            return saved
        finally:
            lock.release()
            if not lock.statistics().tasks_waiting:
                self._saving.pop(rid, None)
