"""One scheduler, for `lgprune sweep --every` and for `lgprune serve`'s sweeps and refreshes:
run a job, wait `period` after it ends, again, until `stopping` is set. A slow run delays
the next, never overlaps it; a run that fails is logged in one line and the next one runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from lgprune.urls import redact

log = logging.getLogger("lgprune")


async def every(
    period: float,
    job: Callable[[], Awaitable[object]],
    stopping: asyncio.Event,
    on_next: Callable[[float | None], object] | None = None,
) -> None:
    """Run `job` now and then `period` seconds after each run ends; `on_next` is told when
    the next run is due (None once the schedule ends)."""
    try:
        while not stopping.is_set():
            try:
                await job()
            except Exception as error:  # a schedule outlives any one run
                text = redact(" ".join(str(error).split())) or "-"
                log.error("lgprune: a scheduled run failed: %s: %s", type(error).__name__, text)
            if stopping.is_set():
                break
            if on_next is not None:
                on_next(time.time() + period)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)
    finally:
        if on_next is not None:
            on_next(None)
