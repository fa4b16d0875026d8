"""`Pruner` and `AsyncPruner`: send the library's calls and loop; nothing else."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
import redis.asyncio

from lgprune.driver import Steps, arun, run
from lgprune.library import install_steps
from lgprune.protocol import FULL_EVERY, Duration, Options, check_count, many_steps, prune_steps, sweep_steps
from lgprune.results import PruneResult, SweepResult
from lgprune.stats import Stats, stats_steps
from lgprune.urls import check_database

T = TypeVar("T")


class Pruner:
    """Prunes LangGraph checkpoints over a `redis.Redis` client.

    The lgprune library is loaded into the server on first use (or by
    `install()`); every prune runs inside Redis in bounded calls.
    `layout`: whose keys, "python" (langgraph-checkpoint-redis) or "js"
    (LangGraph.js's saver); None (default) takes the one whose index exists.
    A store where both savers index the same keys is refused (MixedStoreError).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        checkpoint_prefix: str = "checkpoint",
        checkpoint_write_prefix: str = "checkpoint_write",
        budget: int | None = None,
        layout: str | None = None,
    ) -> None:
        self.client = client
        self.options = Options(checkpoint_prefix, checkpoint_write_prefix, budget, layout)
        self._library: str | None = None
        self._installs = 0  # how many times this pruner installed the library
        self._install_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Pruner:
        """A pruner over `redis.Redis.from_url(url)`."""
        return cls(redis.Redis.from_url(url), **kwargs)

    def _install_once(self, seen: int, *, force: bool = False) -> None:
        """Install unless another call did since this one saw `seen` installs: callers
        in flight wait for one probe (or load) instead of each sending their own."""
        with self._install_lock:
            if self._installs == seen:
                self._library = run(install_steps(force=force), self.client.execute_command)
                self._installs += 1

    def _run(self, steps: Steps[T]) -> T:
        check_database(self.client, "the client")
        seen = self._installs
        if self._library is None:
            self._install_once(seen)
            seen = self._installs
        return run(steps, self.client.execute_command, lambda: self._install_once(seen))

    def install(self, *, force: bool = False) -> str:
        """Load the library unless the server has it already; returns its version."""
        self._install_once(self._installs, force=force)
        assert self._library is not None
        return self._library

    def prune(self, thread_id: str | bytes, keep: int, *, dry_run: bool = False) -> PruneResult:
        """Keep the newest `keep` checkpoints per namespace of one thread; delete the rest."""
        return self._run(prune_steps(thread_id, keep, dry_run=dry_run, options=self.options))

    def prune_many(
        self, thread_ids: Iterable[str | bytes], keep: int, *, dry_run: bool = False
    ) -> PruneResult:
        """`prune` for many threads, up to 1,000 per round trip; the counts are summed."""
        return self._run(many_steps(thread_ids, keep, dry_run=dry_run, options=self.options))

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
    ) -> SweepResult:
        """Prune every thread in the database, in bounded server calls.

        Incremental when a sweep of the same rule (keep, max_age, idle_ttl,
        prefixes) completed before: only threads with a checkpoint stored since
        that sweep began, less `margin` (default 10 minutes: the writers' clock
        skew and latency), or that crossed an age since, are visited. `full`
        (and `orphans`) visits every thread, found by SCAN; so does a sweep
        when the rule's last full one began more than `full_every` ago
        (default 7 days; None: never), the backstop for writers that lag
        more than the margin and documents without checkpoint_ts.
        `max_age`: also keep checkpoints younger than this (seconds or timedelta);
        `idle_ttl`: delete whole threads whose newest checkpoint is older than this;
        `orphans`: also delete writes, registries and latest pointers whose
        checkpoint is gone (and older than `grace`, default 10 minutes).
        `on_progress` is called with the running totals after every call.
        """
        return self._run(
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

    def stats(self, keep: int, *, top: int = 20) -> Stats:
        """Read-only: counts, checkpoints per thread, the biggest threads, what `sweep(keep)` frees."""
        return self._run(stats_steps(check_count("keep", keep), options=self.options, top=top))


class AsyncPruner:
    """`Pruner` over a `redis.asyncio.Redis` client."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        checkpoint_prefix: str = "checkpoint",
        checkpoint_write_prefix: str = "checkpoint_write",
        budget: int | None = None,
        layout: str | None = None,
    ) -> None:
        self.client = client
        self.options = Options(checkpoint_prefix, checkpoint_write_prefix, budget, layout)
        self._library: str | None = None
        self._installs = 0  # how many times this pruner installed the library
        self._install_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncPruner:
        """A pruner over `redis.asyncio.Redis.from_url(url)`."""
        return cls(redis.asyncio.Redis.from_url(url), **kwargs)

    async def _install_once(self, seen: int, *, force: bool = False) -> None:
        """Install unless another call did since this one saw `seen` installs: callers
        in flight wait for one probe (or load) instead of each sending their own."""
        async with self._install_lock:
            if self._installs == seen:
                self._library = await arun(install_steps(force=force), self.client.execute_command)
                self._installs += 1

    async def _run(self, steps: Steps[T]) -> T:
        check_database(self.client, "the client")
        seen = self._installs
        if self._library is None:
            await self._install_once(seen)
            seen = self._installs
        return await arun(steps, self.client.execute_command, lambda: self._install_once(seen))

    async def install(self, *, force: bool = False) -> str:
        """Load the library unless the server has it already; returns its version."""
        await self._install_once(self._installs, force=force)
        assert self._library is not None
        return self._library

    async def prune(self, thread_id: str | bytes, keep: int, *, dry_run: bool = False) -> PruneResult:
        """Keep the newest `keep` checkpoints per namespace of one thread; delete the rest."""
        return await self._run(prune_steps(thread_id, keep, dry_run=dry_run, options=self.options))

    async def prune_many(
        self, thread_ids: Iterable[str | bytes], keep: int, *, dry_run: bool = False
    ) -> PruneResult:
        """`prune` for many threads, up to 1,000 per round trip; the counts are summed."""
        return await self._run(many_steps(thread_ids, keep, dry_run=dry_run, options=self.options))

    async def sweep(
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
    ) -> SweepResult:
        """Prune every thread in the database, in bounded server calls.

        Incremental when a sweep of the same rule (keep, max_age, idle_ttl,
        prefixes) completed before: only threads with a checkpoint stored since
        that sweep began, less `margin` (default 10 minutes: the writers' clock
        skew and latency), or that crossed an age since, are visited. `full`
        (and `orphans`) visits every thread, found by SCAN; so does a sweep
        when the rule's last full one began more than `full_every` ago
        (default 7 days; None: never), the backstop for writers that lag
        more than the margin and documents without checkpoint_ts.
        `max_age`: also keep checkpoints younger than this (seconds or timedelta);
        `idle_ttl`: delete whole threads whose newest checkpoint is older than this;
        `orphans`: also delete writes, registries and latest pointers whose
        checkpoint is gone (and older than `grace`, default 10 minutes).
        `on_progress` is called with the running totals after every call.
        """
        return await self._run(
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

    async def stats(self, keep: int, *, top: int = 20) -> Stats:
        """Read-only: counts, checkpoints per thread, the biggest threads, what `sweep(keep)` frees."""
        return await self._run(stats_steps(check_count("keep", keep), options=self.options, top=top))
