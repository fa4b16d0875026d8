"""One scheduler, for `lgprune sweep --every` and for `lgprune serve`'s sweeps and refreshes:
run a job, wait `period` after it ends, again, until `stopping` is set. A slow run delays
the next, never overlaps it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable


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
            await job()
            if stopping.is_set():
                break
            if on_next is not None:
                on_next(time.time() + period)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)
    finally:
        if on_next is not None:
            on_next(None)
