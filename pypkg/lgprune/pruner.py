"""`Pruner` and `AsyncPruner`: send the library's calls and loop; nothing else.

Every method is written once, in `Shell`, as the steps it sends (see driver.py);
the two classes differ only in how they run steps: `Pruner` over a `redis.Redis`
returns results, `AsyncPruner` over a `redis.asyncio.Redis` returns coroutines.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, TypeVar

import redis
import redis.asyncio

from lgprune.driver import FORCE_INSTALL, INSTALL, AsyncRunner, Steps, SyncRunner, arun, operation, run
from lgprune.library import install_steps
from lgprune.protocol import FULL_EVERY, Duration, Options, check_count, many_steps, prune_steps, sweep_steps
from lgprune.results import PruneResult, SweepResult
from lgprune.stats import Stats, stats_steps
from lgprune.urls import check_database

T = TypeVar("T")
C = TypeVar("C", redis.Redis, redis.asyncio.Redis)
S = TypeVar("S", bound="Shell[Any]")


class Shell(Generic[C]):
    """Prunes LangGraph checkpoints over a Redis client.

    The lgprune library is loaded into the server on first use (or by
    `install()`); every prune runs inside Redis in bounded calls.
    `layout`: whose keys, "python" (langgraph-checkpoint-redis) or "js"
    (LangGraph.js's saver); None (default) takes the one whose index exists.
    A store where both savers index the same keys is refused (MixedStoreError).
    `budget`: how much one server call may do (None: the library's default).
    A larger budget means fewer, longer calls.

    Every duration (`max_age`, `idle_ttl`, `grace`, `margin`, `full_every`) is a
    `timedelta` or a number of seconds. `keep` counts per namespace: the root
    graph and each subgraph run (`checkpoint_ns`) keep their own newest `keep`.
    """

    client_class: ClassVar[Any]  # what from_url makes
    lock_class: ClassVar[Callable[[], Any]]  # what makes the install lock

    def __init__(
        self,
        client: C,
        *,
        checkpoint_prefix: str = "checkpoint",
        checkpoint_write_prefix: str = "checkpoint_write",
        budget: int | None = None,
        layout: str | None = None,
    ) -> None:
        self.client: C = client
        self.options = Options(checkpoint_prefix, checkpoint_write_prefix, budget, layout)
        self._library: str | None = None
        self._installs = 0  # how many times this pruner installed the library
        self._install_lock = type(self).lock_class()

    @classmethod
    def from_url(cls: type[S], url: str, **kwargs: Any) -> S:
        """A pruner over its client class's `from_url(url)`."""
        return cls(cls.client_class.from_url(url), **kwargs)

    def _install_steps(self, seen: int, force: bool) -> Steps[None]:
        """Install unless another call did since this one saw `seen` installs: callers
        in flight wait (on the install lock) for one probe or load instead of each
        sending their own."""
        if self._installs == seen:
            self._library = yield from install_steps(force=force)
            self._installs += 1

    def _ready(self, steps: Steps[T]) -> Steps[T]:
        """`steps`, on database 0, after the library is installed by this pruner's first call."""
        check_database(self.client, "the client")
        if self._library is None:
            yield INSTALL
        return (yield from steps)

    @operation
    def install(self, *, force: bool = False) -> Steps[str]:
        """Load the library unless the server has it already; returns its version."""
        yield FORCE_INSTALL if force else INSTALL
        assert self._library is not None
        return self._library

    @operation
    def prune(self, thread_id: str | bytes, keep: int, *, dry_run: bool = False) -> Steps[PruneResult]:
        """Keep the newest `keep` checkpoints per namespace of one thread; delete the rest."""
        return self._ready(prune_steps(thread_id, keep, dry_run=dry_run, options=self.options))

    @operation
    def prune_many(
        self, thread_ids: Iterable[str | bytes], keep: int, *, dry_run: bool = False
    ) -> Steps[PruneResult]:
        """`prune` for many threads, up to 1,000 per round trip; the counts are summed."""
        return self._ready(many_steps(thread_ids, keep, dry_run=dry_run, options=self.options))

    @operation
    def sweep(
        self,
        keep: int,
        *,
        dry_run: bool = False,
        max_age: Duration | None = None,
        idle_ttl: Duration | None = None,
        orphans: bool = False,
        grace: Duration | None = None,
        full: bool = False,
        margin: Duration | None = None,
        full_every: Duration | None = FULL_EVERY,
        on_progress: Callable[[SweepResult], object] | None = None,
    ) -> Steps[SweepResult]:
        """Prune every thread in the database, in bounded server calls.

        Incremental when a sweep of the same rule (keep, max_age, idle_ttl,
        prefixes) completed before: only threads with a checkpoint stored since
        that sweep began, less `margin` (default 10 minutes: the writers' clock
        skew and latency), or that crossed an age since, are visited. `full`
        (and `orphans`) visits every thread, found by checkpoint_ts; so does a sweep
        when the rule's last full one began more than `full_every` ago
        (default 7 days; None: never), the backstop for writers that lag
        more than the margin. (A thread none of whose checkpoints has a
        checkpoint_ts is found by no sweep: prune it by its id.)
        `max_age`: also keep checkpoints younger than this (seconds or timedelta);
        `idle_ttl`: delete whole threads whose newest checkpoint is older than this;
        `orphans`: also delete writes, registries and latest pointers whose
        checkpoint is gone (and older than `grace`, default 10 minutes).
        `on_progress` is called with the running totals after every call.
        """
        return self._ready(
            sweep_steps(
                keep,
                dry_run=dry_run,
                options=self.options,
                max_age=max_age,
                idle_ttl=idle_ttl,
                orphans=orphans,
                grace=grace,
                full=full,
                margin=margin,
                full_every=full_every,
                on_progress=on_progress,
            )
        )

    @operation
    def stats(self, keep: int, *, top: int = 20) -> Steps[Stats]:
        """Read-only: counts, checkpoints per thread, the biggest threads, what `sweep(keep)` frees."""
        return self._ready(stats_steps(check_count("keep", keep), options=self.options, top=top))


class Pruner(Shell[redis.Redis], SyncRunner):
    """Prunes LangGraph checkpoints over a `redis.Redis` client (see `Shell`)."""

    client_class = redis.Redis
    lock_class = threading.Lock

    def _run(self, make: Callable[[], Steps[T]]) -> T:
        seen = self._installs

        def install(force: bool) -> None:
            nonlocal seen
            with self._install_lock:
                run(self._install_steps(seen, force), self.client.execute_command)
            seen = self._installs

        return run(make(), self.client.execute_command, install)


class AsyncPruner(Shell[redis.asyncio.Redis], AsyncRunner):
    """`Pruner` over a `redis.asyncio.Redis` client: its methods are coroutines."""

    client_class = redis.asyncio.Redis
    lock_class = asyncio.Lock

    async def _run(self, make: Callable[[], Steps[T]]) -> T:
        seen = self._installs

        async def install(force: bool) -> None:
            nonlocal seen
            async with self._install_lock:
                await arun(self._install_steps(seen, force), self.client.execute_command)
            seen = self._installs

        return await arun(make(), self.client.execute_command, install)
