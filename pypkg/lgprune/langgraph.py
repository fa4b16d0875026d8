"""Drop-in savers whose prune and delete_thread run inside Redis, with optional auto-prune.

    graph.compile(checkpointer=PruningRedisSaver.from_conn_string(url, keep_last=10))

`prune(thread_ids, strategy=..., keep_last=...)` means what it means for
`RedisSaver.prune`: "keep_latest" keeps 1 checkpoint per namespace, "delete"
keeps 0, `keep_last` overrides both; an empty list does nothing. With
`keep_last` set on the saver, a thread is pruned after every `slack` puts (and
on its first put seen by this process), so it stays within keep_last + slack
checkpoints per namespace. The async saver prunes in a background task and
waits for those tasks when it closes; its prunes run over a small pool of their
own (`prune_connections`, default 4) that waits for a free connection, so they
never fail for want of one and never take the saver's own connections. A saver
left unclosed logs, once, how many auto-prunes it dropped.

`list()` / `alist()` return exactly the thread asked for: RedisSaver's TAG
query folds case and splits commas (`list("wang1")` also returns `Wang1`'s
checkpoints), so every item is confirmed against the id asked for.

Over a client lgprune cannot drive (a Redis Cluster client: a thread's keys
span shards; anything that is not a redis.Redis), the savers still construct
as RedisSaver does, and prune, delete_thread and auto-prune fall back to
RedisSaver's client-side implementation, with one logged warning.
"""

from __future__ import annotations

import asyncio
import inspect
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

from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.protocol import check_count
from lgprune.pruner import AsyncPruner, Pruner
from lgprune.tags import indexed_tag

log = logging.getLogger("lgprune")

STRATEGIES = {"keep_latest": 1, "delete": 0}
PRUNE_CONNECTIONS = 4  # connections of the async saver's auto-prune pool
TRACKED_THREADS = 100_000  # put counters kept in memory (least recently used go first)
SAVER_LIST_LIMIT = 10_000  # what RedisSaver.list returns at most when given no limit


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


class ExactList:
    """What one list() call asks RedisSaver.list for, and which of its items to return.

    RedisSaver.list matches thread ids by TAG: it folds case, splits on commas
    (so "a,b" finds nothing) and fills `limit` with other threads' checkpoints.
    The saver is asked for the indexed piece of each id instead, and every item
    is confirmed against the exact id; while confirmed items fall short of
    `limit` and the saver's page was full, a larger page is asked for.
    """

    def __init__(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        limit: int | None,
    ) -> None:
        self.config, self.filter, self.limit = config, filter, limit
        self.threads: list[str] = []
        if config is not None and "thread_id" in config.get("configurable", {}):
            configurable = dict(config["configurable"])
            self.threads.append(str(configurable["thread_id"]))
            configurable["thread_id"] = indexed_tag(self.threads[-1])
            self.config = {**config, "configurable": configurable}
        if filter is not None and "thread_id" in filter:
            self.threads.append(str(filter["thread_id"]))
            self.filter = {**filter, "thread_id": indexed_tag(self.threads[-1])}
        self.root_only = root_only(config)
        self.page = limit or SAVER_LIST_LIMIT
        self.unmatchable = any(indexed_tag(t) == "" for t in self.threads)

    def wanted(self, item: CheckpointTuple) -> bool:
        thread = str(item.config["configurable"]["thread_id"])
        return all(thread == t for t in self.threads) and (not self.root_only or in_root(item))

    def confirm(self, items: list[CheckpointTuple]) -> list[CheckpointTuple] | None:
        """The items to return, or None when a larger page (now `self.page`) is needed."""
        kept = [item for item in items if self.wanted(item)]
        if self.limit and len(kept) >= self.limit:
            return kept[: self.limit]
        if len(items) < self.page or len(kept) == len(items):
            return kept  # the saver had no more, or nothing was filtered out
        self.page *= 4
        return None


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


def unusable_client(client: object, standalone: type, name: str) -> str | None:
    """Why lgprune's functions cannot run over `client` (which must be a `standalone`,
    called `name`), or None when they can."""
    if isinstance(client, standalone):
        return None
    kind = type(client).__name__
    if "Cluster" in kind:
        return f"the saver's client is a Redis Cluster client ({kind}): a thread's keys span shards"
    return f"the saver's client is a {type(client).__module__}.{kind}, not a {name}"


def prune_client(client: redis.asyncio.Redis, connections: int) -> redis.asyncio.Redis:
    """A client for the async saver's prunes: the saver's connection settings over a
    blocking pool of `connections` of its own, where a prune waits for a free one."""
    pool = client.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k != "himport_registry"}
    blocking = redis.asyncio.BlockingConnectionPool(
        max_connections=check_count("prune_connections", connections, minimum=1),
        timeout=None,
        connection_class=pool.connection_class,
        **settings,
    )
    return redis.asyncio.Redis(connection_pool=blocking)


def require_client_side_prune(parent: Any, reason: str) -> None:
    """Raise unless the installed saver has a prune(keep_last=...) to fall back to
    (langgraph-checkpoint-redis 0.5 and later)."""
    if "keep_last" not in inspect.signature(parent).parameters:
        raise LgpruneError(f"{reason}, and this langgraph-checkpoint-redis has no prune to fall back to")


def warn_fallback(saver: RedisSaver | AsyncRedisSaver, reason: str) -> None:
    """Log once per saver that it prunes client-side, and why."""
    if not getattr(saver, "_fallback_warned", False):
        saver._fallback_warned = True  # type: ignore[union-attr]
        log.warning(
            "lgprune: %s; prune, delete_thread and auto-prune use RedisSaver's client-side "
            "implementation instead of lgprune's server-side functions",
            reason,
        )


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
        client = self._redis
        self.fallback = unusable_client(client, redis.Redis, "redis.Redis")
        self.pruner: Pruner | None = None
        if isinstance(client, redis.Redis):
            self.pruner = Pruner(
                client,
                checkpoint_prefix=self._checkpoint_prefix,
                checkpoint_write_prefix=self._checkpoint_write_prefix,
                layout="python",  # the savers it wraps are langgraph-checkpoint-redis's
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
                self._prune_keep([thread_id], self.auto.keep_last or 0)
            except Exception:  # a failed prune must not fail the graph's turn
                log.exception("lgprune: auto-prune of thread %r failed", thread_id)
        return stored

    def _prune_keep(self, thread_ids: list[str], keep: int) -> None:
        if self.pruner is not None:
            self.pruner.prune_many(thread_ids, keep)
            return
        assert self.fallback is not None
        require_client_side_prune(RedisSaver.prune, self.fallback)
        warn_fallback(self, self.fallback)
        super().prune(thread_ids, keep_last=keep)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """RedisSaver.list of exactly the thread asked for, where `checkpoint_ns: ""`
        means the root namespace only."""
        query = ExactList(config, filter, limit)
        if query.unmatchable:
            return
        while True:
            items = list(super().list(query.config, filter=query.filter, before=before, limit=query.page))
            found = query.confirm(items)
            if found is not None:
                yield from found
                return

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
            self._prune_keep(list(thread_ids), keep)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and registry key of a thread (server-side)."""
        if self.pruner is not None:
            self.pruner.prune(thread_id, 0)
            return
        assert self.fallback is not None
        warn_fallback(self, self.fallback)
        super().delete_thread(thread_id)


class AsyncPruningRedisSaver(AsyncRedisSaver):
    """`AsyncRedisSaver` with server-side `aprune`/`adelete_thread` and background auto-prune
    over a pool of `prune_connections` of its own."""

    def __init__(
        self,
        *args: Any,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        prune_connections: int = PRUNE_CONNECTIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._configure(keep_last, slack, budget, prune_connections)

    def _configure(
        self, keep_last: int | None, slack: int | None, budget: int | None, prune_connections: int
    ) -> None:
        self.auto = PutCounter(keep_last, slack)
        client = self._redis
        self.fallback = unusable_client(client, redis.asyncio.Redis, "redis.asyncio.Redis")
        self.pruner: AsyncPruner | None = None
        if isinstance(client, redis.asyncio.Redis):
            self.pruner = AsyncPruner(
                prune_client(client, prune_connections),
                checkpoint_prefix=self._checkpoint_prefix,
                checkpoint_write_prefix=self._checkpoint_write_prefix,
                layout="python",  # the savers it wraps are langgraph-checkpoint-redis's
                budget=budget,
            )
        self._pruning: dict[str, asyncio.Task[None]] = {}
        self._dropped_logged = False

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls,
        redis_url: str | None = None,
        *,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        prune_connections: int = PRUNE_CONNECTIONS,
        **kwargs: Any,
    ) -> AsyncIterator[AsyncPruningRedisSaver]:
        """As `AsyncRedisSaver.from_conn_string`, plus keep_last, slack, budget and
        prune_connections."""
        async with super().from_conn_string(redis_url, **kwargs) as saver:
            assert isinstance(saver, AsyncPruningRedisSaver)
            await saver._close_pruner()  # the one __init__ made, before _configure makes another
            saver._configure(keep_last, slack, budget, prune_connections)
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
            await self._prune_keep([thread_id], self.auto.keep_last or 0)
        except Exception:  # logged, never raised into the graph
            log.exception("lgprune: auto-prune of thread %r failed", thread_id)
        except asyncio.CancelledError:  # the loop ended under a saver that was not closed
            if not self._dropped_logged:
                self._dropped_logged = True
                log.warning(
                    "lgprune: %d auto-prune(s) dropped: the event loop ended before they ran; "
                    "use `async with` the saver (or await its __aexit__) to let them finish",
                    len(self._pruning),
                )
            raise
        finally:
            self._pruning.pop(thread_id, None)

    async def _prune_keep(self, thread_ids: list[str], keep: int) -> None:
        if self.pruner is not None:
            await self.pruner.prune_many(thread_ids, keep)
            return
        assert self.fallback is not None
        require_client_side_prune(AsyncRedisSaver.aprune, self.fallback)
        warn_fallback(self, self.fallback)
        await super().aprune(thread_ids, keep_last=keep)

    async def wait_for_pruning(self) -> None:
        """Wait until every background auto-prune has finished."""
        while self._pruning:
            await asyncio.gather(*list(self._pruning.values()), return_exceptions=True)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.wait_for_pruning()
        await self._close_pruner()
        await super().__aexit__(exc_type, exc, tb)

    async def _close_pruner(self) -> None:
        """Close the prunes' own pool."""
        if self.pruner is not None:
            await self.pruner.client.aclose(close_connection_pool=True)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """AsyncRedisSaver.alist of exactly the thread asked for, where `checkpoint_ns: ""`
        means the root namespace only."""
        query = ExactList(config, filter, limit)
        if query.unmatchable:
            return
        while True:
            page = super().alist(query.config, filter=query.filter, before=before, limit=query.page)
            found = query.confirm([item async for item in page])
            if found is not None:
                for item in found:
                    yield item
                return

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
            await self._prune_keep(list(thread_ids), keep)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and registry key of a thread (server-side)."""
        if self.pruner is not None:
            await self.pruner.prune(thread_id, 0)
            return
        assert self.fallback is not None
        warn_fallback(self, self.fallback)
        await super().adelete_thread(thread_id)


__all__ = ["AsyncPruningRedisSaver", "PruningRedisSaver", "resolve_keep"]
