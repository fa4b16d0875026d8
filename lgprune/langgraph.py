"""Drop-in savers whose prune and delete_thread run inside Redis, with optional auto-prune.

    graph.compile(checkpointer=PruningRedisSaver.from_conn_string(url, keep_last=10))

`prune(thread_ids, strategy=..., keep_last=...)` means what it means for
`RedisSaver.prune`: "keep_latest" keeps 1 checkpoint per namespace, "delete"
keeps 0, `keep_last` overrides both; an empty list does nothing. With
`keep_last` set on the saver, a thread is pruned after every `slack` puts (and
on its first put seen by this process), so it stays within keep_last + slack
checkpoints per namespace. The async saver prunes in a background task and
waits for those tasks when it closes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.redis import AsyncRedisSaver, RedisSaver

from lgprune.calls import check_count
from lgprune.errors import InvalidArgumentError
from lgprune.pruner import AsyncPruner, Pruner

log = logging.getLogger("lgprune")

STRATEGIES = {"keep_latest": 1, "delete": 0}
TRACKED_THREADS = 100_000  # put counters kept in memory (least recently used go first)


def resolve_keep(strategy: str, keep_last: int | None) -> int:
    """The number of checkpoints per namespace a prune(strategy, keep_last) keeps."""
    if keep_last is not None:
        return check_count("keep_last", keep_last)
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy must be 'keep_latest' or 'delete', got {strategy!r}")
    return STRATEGIES[strategy]


def root_only(config: RunnableConfig | None) -> bool:
    """True when a list() config asks for the root namespace by `checkpoint_ns: ""`.

    RedisSaver.list treats "" as "every namespace"; LangGraph (and every other
    saver) means the root namespace, and the conformance suite checks it.
    """
    configurable = (config or {}).get("configurable", {})
    return "checkpoint_ns" in configurable and configurable["checkpoint_ns"] == ""


def in_root(item: CheckpointTuple) -> bool:
    return bool(item.config["configurable"].get("checkpoint_ns", "") == "")


class PutCounter:
    """When to auto-prune: on a thread's first put seen here, then every `slack` puts."""

    def __init__(self, keep_last: int | None, slack: int | None) -> None:
        self.keep_last = None if keep_last is None else check_count("keep_last", keep_last)
        if slack is None:
            slack = max(1, (self.keep_last or 0) // 2)
        self.slack = check_count("slack", slack, minimum=1)
        self._since_prune: OrderedDict[str, int] = OrderedDict()

    def due(self, config: RunnableConfig) -> str | None:
        """Count a put; the thread id when that thread should be pruned now."""
        if self.keep_last is None:
            return None
        thread_id = str(config["configurable"]["thread_id"])
        count = self._since_prune.pop(thread_id, self.slack - 1) + 1
        if count >= self.slack:
            count = 0
        self._since_prune[thread_id] = count
        if len(self._since_prune) > TRACKED_THREADS:
            self._since_prune.popitem(last=False)
        return thread_id if count == 0 else None


def sync_client(saver: RedisSaver) -> redis.Redis:
    """The saver's client, which must be a plain Redis (lgprune does not support Redis Cluster)."""
    if not isinstance(saver._redis, redis.Redis):
        raise InvalidArgumentError("lgprune needs a standalone Redis client; Redis Cluster is not supported")
    return saver._redis


def async_client(saver: AsyncRedisSaver) -> redis.asyncio.Redis:
    """The async saver's client, which must be a plain asyncio Redis (no Redis Cluster)."""
    if not isinstance(saver._redis, redis.asyncio.Redis):
        raise InvalidArgumentError("lgprune needs a standalone Redis client; Redis Cluster is not supported")
    return saver._redis


class PruningRedisSaver(RedisSaver):
    """`RedisSaver` with server-side `prune`/`delete_thread` and optional auto-prune."""

    def __init__(
        self,
        *args: Any,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._configure(keep_last, slack, budget)

    def _configure(self, keep_last: int | None, slack: int | None, budget: int | None) -> None:
        self.auto = PutCounter(keep_last, slack)
        self.pruner = Pruner(
            sync_client(self),
            checkpoint_prefix=self._checkpoint_prefix,
            checkpoint_write_prefix=self._checkpoint_write_prefix,
            budget=budget,
        )

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        redis_url: str | None = None,
        *,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        **kwargs: Any,
    ) -> Iterator[PruningRedisSaver]:
        """As `RedisSaver.from_conn_string`, plus keep_last, slack and budget."""
        with super().from_conn_string(redis_url, **kwargs) as saver:
            assert isinstance(saver, PruningRedisSaver)
            saver._configure(keep_last, slack, budget)
            yield saver

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        stored = super().put(config, checkpoint, metadata, new_versions)
        thread_id = self.auto.due(config)
        if thread_id is not None:
            try:
                self.pruner.prune(thread_id, self.auto.keep_last or 0)
            except Exception:  # a failed prune must not fail the graph's turn
                log.exception("lgprune: auto-prune of thread %r failed", thread_id)
        return stored

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """RedisSaver.list, where `checkpoint_ns: ""` means the root namespace only."""
        if not root_only(config):
            yield from super().list(config, filter=filter, before=before, limit=limit)
            return
        found = (item for item in super().list(config, filter=filter, before=before) if in_root(item))
        yield from itertools.islice(found, limit)

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
        max_results: int | None = None,
    ) -> None:
        """Keep the newest checkpoints per namespace of each thread (server-side).

        `max_results` is accepted for compatibility with RedisSaver.prune and
        ignored: there is no cap on how many checkpoints a thread may have.
        """
        keep = resolve_keep(strategy, keep_last)
        if thread_ids:
            self.pruner.prune_many(list(thread_ids), keep)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and registry key of a thread (server-side)."""
        self.pruner.prune(thread_id, 0)


class AsyncPruningRedisSaver(AsyncRedisSaver):
    """`AsyncRedisSaver` with server-side `aprune`/`adelete_thread` and background auto-prune."""

    def __init__(
        self,
        *args: Any,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._configure(keep_last, slack, budget)

    def _configure(self, keep_last: int | None, slack: int | None, budget: int | None) -> None:
        self.auto = PutCounter(keep_last, slack)
        self.pruner = AsyncPruner(
            async_client(self),
            checkpoint_prefix=self._checkpoint_prefix,
            checkpoint_write_prefix=self._checkpoint_write_prefix,
            budget=budget,
        )
        self._pruning: dict[str, asyncio.Task[None]] = {}

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls,
        redis_url: str | None = None,
        *,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AsyncPruningRedisSaver]:
        """As `AsyncRedisSaver.from_conn_string`, plus keep_last, slack and budget."""
        async with super().from_conn_string(redis_url, **kwargs) as saver:
            assert isinstance(saver, AsyncPruningRedisSaver)
            saver._configure(keep_last, slack, budget)
            yield saver

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        stream_mode: str = "values",
    ) -> RunnableConfig:
        stored = await super().aput(config, checkpoint, metadata, new_versions, stream_mode)
        thread_id = self.auto.due(config)
        if thread_id is not None and thread_id not in self._pruning:
            task = asyncio.get_running_loop().create_task(self._auto_prune(thread_id))
            self._pruning[thread_id] = task
        return stored

    async def _auto_prune(self, thread_id: str) -> None:
        try:
            await self.pruner.prune(thread_id, self.auto.keep_last or 0)
        except Exception:  # logged, never raised into the graph
            log.exception("lgprune: auto-prune of thread %r failed", thread_id)
        finally:
            self._pruning.pop(thread_id, None)

    async def wait_for_pruning(self) -> None:
        """Wait until every background auto-prune has finished."""
        while self._pruning:
            await asyncio.gather(*list(self._pruning.values()), return_exceptions=True)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.wait_for_pruning()
        await super().__aexit__(exc_type, exc, tb)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """AsyncRedisSaver.alist, where `checkpoint_ns: ""` means the root namespace only."""
        if not root_only(config):
            async for item in super().alist(config, filter=filter, before=before, limit=limit):
                yield item
            return
        count = 0
        async for item in super().alist(config, filter=filter, before=before):
            if limit is not None and count >= limit:
                return
            if in_root(item):
                count += 1
                yield item

    async def aprune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
        max_results: int | None = None,
    ) -> None:
        """Keep the newest checkpoints per namespace of each thread (server-side).

        `max_results` is accepted for compatibility with AsyncRedisSaver.aprune
        and ignored: there is no cap on how many checkpoints a thread may have.
        """
        keep = resolve_keep(strategy, keep_last)
        if thread_ids:
            await self.pruner.prune_many(list(thread_ids), keep)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and registry key of a thread (server-side)."""
        await self.pruner.prune(thread_id, 0)


__all__ = ["AsyncPruningRedisSaver", "PruningRedisSaver", "resolve_keep"]
