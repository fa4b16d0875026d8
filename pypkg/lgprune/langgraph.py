"""Drop-in savers whose prune and delete_thread run inside Redis, with optional auto-prune.

    graph.compile(checkpointer=PruningRedisSaver.from_conn_string(url, keep_last=10))

`prune(thread_ids, strategy=..., keep_last=...)` means what it means for
`RedisSaver.prune`: "keep_latest" keeps 1 checkpoint per namespace, "delete"
keeps 0, `keep_last` overrides both; an empty list does nothing. With
`keep_last` set on the saver, a thread is pruned after every `slack` puts (and
on its first put seen by this process), so it stays within keep_last + slack
checkpoints per namespace. The async saver prunes in a background task and
waits for those tasks when it closes; its prunes run over a small pool of their
own (`prune_connections`, default 4), made on the first prune from the saver's
connection settings, that waits for a free connection, so they never fail for
want of one and never take the saver's own connections. (A pool that finds its
server itself, as a Sentinel pool does, is not copied: the prunes then use the
saver's client, and one warning says how to size it.) A saver left unclosed
logs, once, how many auto-prunes it dropped.

`list()` / `alist()` return exactly the thread asked for: RedisSaver's TAG
query folds case and splits commas (`list("wang1")` also returns `Wang1`'s
checkpoints), so every item is confirmed against the id asked for.

Over a client lgprune cannot drive (a Redis Cluster client: a thread's keys
span shards; anything that is not a redis.Redis, or whose pool is not a redis-py
pool, such as a test's mock), the savers still construct as RedisSaver does, and
prune, delete_thread and auto-prune fall back to RedisSaver's client-side
implementation, with one logged warning.

Each method is written once, in `Pruning`, as the steps it takes: a step calls
the plain saver's method (`list`, or `alist` in the async saver) or the pruner's.
The two saver classes bind the steps to LangGraph's sync or async names and run
them (see lgprune.driver).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import _AsyncGeneratorContextManager, _GeneratorContextManager
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.redis import AsyncRedisSaver, RedisSaver

from lgprune.driver import AsyncRunner, Steps, SyncRunner, arun, listing, operation, run
from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.protocol import Options, check_count
from lgprune.pruner import AsyncPruner, Pruner
from lgprune.tags import indexed_tag

log = logging.getLogger("lgprune")
T = TypeVar("T")

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


def unusable_client(client: object, standalone: type, name: str, *, pool: type = object) -> str | None:
    """Why lgprune's functions cannot run over `client` (which must be a `standalone`,
    called `name`, whose connection pool is a `pool`), or None when they can."""
    kind = type(client).__name__
    if isinstance(client, standalone):
        found = getattr(client, "connection_pool", None)
        if isinstance(found, pool):
            return None
        what = type(found)
        return (
            f"the saver's client ({kind}) has a {what.__module__}.{what.__name__} for its "
            "connection pool, not a redis-py pool"
        )
    if "Cluster" in kind:
        return f"the saver's client is a Redis Cluster client ({kind}): a thread's keys span shards"
    return f"the saver's client is a {type(client).__module__}.{kind}, not a {name}"


def prune_client(client: redis.asyncio.Redis, connections: int) -> redis.asyncio.Redis | None:
    """A client for the async saver's prunes: the saver's connection settings over a
    blocking pool of `connections` of its own, where a prune waits for a free one; None
    when the saver's pool is not one of redis-py's plain pools, whose settings are
    all in its connection_kwargs (a Sentinel pool, say, finds its server itself)."""
    pool = client.connection_pool
    plain = (redis.asyncio.ConnectionPool, redis.asyncio.BlockingConnectionPool)
    if type(pool) not in plain or not isinstance(pool.connection_kwargs, dict):
        return None
    settings = {k: v for k, v in pool.connection_kwargs.items() if k != "himport_registry"}
    blocking = redis.asyncio.BlockingConnectionPool(
        max_connections=connections, timeout=None, connection_class=pool.connection_class, **settings
    )
    return redis.asyncio.Redis(connection_pool=blocking)


def require_client_side_prune(parent: Any, reason: str) -> None:
    """Raise unless the installed saver has a prune(keep_last=...) to fall back to
    (langgraph-checkpoint-redis 0.5 and later)."""
    if "keep_last" not in inspect.signature(parent).parameters:
        raise LgpruneError(f"{reason}, and this langgraph-checkpoint-redis has no prune to fall back to")


def warn_fallback(saver: Pruning[Any, Any], reason: str) -> None:
    """Log once per saver that it prunes client-side, and why."""
    if not saver._fallback_warned:
        saver._fallback_warned = True
        log.warning(
            "lgprune: %s; prune, delete_thread and auto-prune use RedisSaver's client-side "
            "implementation instead of lgprune's server-side functions",
            reason,
        )


SAVER, PRUNER = "lgprune: the plain saver's", "lgprune: the pruner's"  # whose method a step calls


def call(whose: str, name: str, *args: Any, **kwargs: Any) -> Steps[Any]:
    """A step of a saver's method: call the plain saver's method `name` (on the async
    saver, its "a" + name) or its pruner's; what it raised is raised here."""
    reply = yield (whose, name, args, kwargs)
    if isinstance(reply, Exception):
        raise reply
    return reply


PR = TypeVar("PR", Pruner, AsyncPruner)
Opened = TypeVar("Opened")  # what from_conn_string returns: a context manager of the saver


class Pruning(Generic[PR, Opened]):
    """What the two drop-in savers share: every method written once, as the steps it
    takes (see lgprune.driver). The saver classes bind them to LangGraph's names, sync
    or async, and say how to make their pruner and how to call a method."""

    plain_saver: ClassVar[Any]  # RedisSaver or AsyncRedisSaver
    client_class: ClassVar[type]  # the client lgprune can drive ...
    pool_class: ClassVar[type]  # ... over this kind of pool
    prefix: ClassVar[str]  # of the plain saver's method names: "" or "a"
    client_class_name: ClassVar[str]
    own_options: ClassVar[tuple[str, ...]] = ()  # from_conn_string's keywords for this class's __init__
    _redis: Any  # (the plain saver's)
    _checkpoint_prefix: Any
    _checkpoint_write_prefix: Any

    def __init__(
        self,
        *args: Any,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.auto = PutCounter(keep_last, slack)
        # checked now; the pruner (with, for the async saver, its pool) is made on the first prune
        self._options = Options(self._checkpoint_prefix, self._checkpoint_write_prefix, budget, "python")
        self.fallback = unusable_client(
            self._redis, self.client_class, self.client_class_name, pool=self.pool_class
        )
        self._pruner: PR | None = None
        self._fallback_warned = False

    @classmethod
    def from_conn_string(
        cls,
        redis_url: str | None = None,
        *,
        keep_last: int | None = None,
        slack: int | None = None,
        budget: int | None = None,
        **kwargs: Any,
    ) -> Opened:
        """As the plain saver's `from_conn_string` (`with`, or `async with` for the async
        saver), plus keep_last, slack and budget (and the async saver's prune_connections)."""
        ours = {name: kwargs.pop(name) for name in cls.own_options if name in kwargs}
        make = functools.partial(cls, keep_last=keep_last, slack=slack, budget=budget, **ours)
        # the plain saver's own, which makes its saver by calling `cls(...)`: given `make`,
        # it makes this saver, configured once
        plain = cls.plain_saver.__dict__["from_conn_string"].__func__
        return plain(make, redis_url, **kwargs)  # type: ignore[no-any-return]

    @property
    def pruner(self) -> PR | None:
        """The pruner the server-side methods use (made on first use), or None when
        they fall back to the plain saver's."""
        if self.fallback is not None:
            return None
        if self._pruner is None:
            self._pruner = self._new_pruner()
        return self._pruner

    def _new_pruner(self) -> PR:
        raise NotImplementedError

    @listing
    def _list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Steps[list[CheckpointTuple]]:
        """The plain saver's list of exactly the thread asked for, where
        `checkpoint_ns: ""` means the root namespace only."""
        query = ExactList(config, filter, limit)
        if query.unmatchable:
            return []
        while True:
            items = yield from call(
                SAVER, "list", query.config, filter=query.filter, before=before, limit=query.page
            )
            found = query.confirm(items)
            if found is not None:
                return found

    @operation
    def _prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
        max_results: int | None = None,
    ) -> Steps[None]:
        """Keep the newest checkpoints per namespace of each thread (server-side).

        `max_results` is accepted for compatibility with the plain saver's prune
        and ignored: there is no cap on how many checkpoints a thread may have.
        """
        keep = resolve_keep(strategy, keep_last)
        if thread_ids:
            yield from self._prune_keep(list(thread_ids), keep)

    @operation
    def _delete_thread(self, thread_id: str) -> Steps[None]:
        """Delete every checkpoint, write and registry key of a thread (server-side)."""
        if self.fallback is None:
            yield from call(PRUNER, "prune", thread_id, 0)
            return
        warn_fallback(self, self.fallback)
        yield from call(SAVER, "delete_thread", thread_id)

    def _prune_keep(self, thread_ids: list[str], keep: int) -> Steps[None]:
        if self.fallback is None:
            yield from call(PRUNER, "prune_many", thread_ids, keep)
            return
        require_client_side_prune(getattr(self.plain_saver, self.prefix + "prune"), self.fallback)
        warn_fallback(self, self.fallback)
        yield from call(SAVER, "prune", thread_ids, keep_last=keep)

    def _auto_prune_steps(self, thread_id: str) -> Steps[None]:
        """An auto-prune of one thread: a failure is logged, never raised into the graph."""
        try:
            yield from self._prune_keep([thread_id], self.auto.keep_last or 0)
        except Exception:
            log.exception("lgprune: auto-prune of thread %r failed", thread_id)


class PruningRedisSaver(
    Pruning[Pruner, _GeneratorContextManager["PruningRedisSaver"]], SyncRunner, RedisSaver
):
    """`RedisSaver` with server-side `prune`/`delete_thread` and optional auto-prune."""

    plain_saver = RedisSaver
    client_class, pool_class, client_class_name = redis.Redis, redis.ConnectionPool, "redis.Redis"
    prefix = ""
    list = Pruning._list
    prune = Pruning._prune
    delete_thread = Pruning._delete_thread

    def _new_pruner(self) -> Pruner:
        return Pruner(self._redis, **dataclasses.asdict(self._options))

    def _run(self, make: Callable[[], Steps[T]]) -> T:
        return run(make(), self._call)

    def _call(self, whose: str, name: str, args: Any, kwargs: Any) -> Any:
        try:
            if whose == PRUNER:
                return getattr(self.pruner, name)(*args, **kwargs)
            found = getattr(self.plain_saver, self.prefix + name)(self, *args, **kwargs)
            return builtins.list(found) if name == "list" else found
        except Exception as error:
            return error

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
            self._run(lambda: self._auto_prune_steps(thread_id))
        return stored


class AsyncPruningRedisSaver(
    Pruning[AsyncPruner, _AsyncGeneratorContextManager["AsyncPruningRedisSaver"]],
    AsyncRunner,
    AsyncRedisSaver,
):
    """`AsyncRedisSaver` with server-side `aprune`/`adelete_thread` and background auto-prune
    over a pool of `prune_connections` of its own, made on the first prune."""

    plain_saver = AsyncRedisSaver
    client_class, pool_class = redis.asyncio.Redis, redis.asyncio.ConnectionPool
    client_class_name = "redis.asyncio.Redis"
    prefix = "a"
    own_options = ("prune_connections",)
    alist = Pruning._list
    aprune = Pruning._prune
    adelete_thread = Pruning._delete_thread

    def __init__(self, *args: Any, prune_connections: int = PRUNE_CONNECTIONS, **kwargs: Any) -> None:
        self.prune_connections = check_count("prune_connections", prune_connections, minimum=1)
        self._pruning: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # threads due again while their prune ran: it runs once more
        self._dropped_logged = False
        self._own_client: redis.asyncio.Redis | None = None  # the prunes' client, when it is not the saver's
        super().__init__(*args, **kwargs)

    def _new_pruner(self) -> AsyncPruner:
        self._own_client = prune_client(self._redis, self.prune_connections)
        if self._own_client is None:
            log.warning(
                "lgprune: the saver's client has a %s, whose settings lgprune does not copy: its "
                "prunes use the saver's own connections; size its pool for the graph's traffic "
                "plus %d prunes at once (prune_connections), or make it a blocking pool that waits",
                type(self._redis.connection_pool).__name__,
                self.prune_connections,
            )
        return AsyncPruner(self._own_client or self._redis, **dataclasses.asdict(self._options))

    async def _run(self, make: Callable[[], Steps[T]]) -> T:
        return await arun(make(), self._call)

    async def _call(self, whose: str, name: str, args: Any, kwargs: Any) -> Any:
        try:
            if whose == PRUNER:
                return await getattr(self.pruner, name)(*args, **kwargs)
            found = getattr(self.plain_saver, self.prefix + name)(self, *args, **kwargs)
            if name == "list":
                return [item async for item in found]
            return await found
        except Exception as error:
            return error

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
        if thread_id is None:
            pass
        elif thread_id in self._pruning:  # its prune may have listed before this put: one more
            self._again.add(thread_id)
        else:
            task = asyncio.get_running_loop().create_task(self._auto_prune(thread_id))
            self._pruning[thread_id] = task
        return stored

    async def _auto_prune(self, thread_id: str) -> None:
        try:
            await self._run(lambda: self._auto_prune_steps(thread_id))
            while thread_id in self._again:
                self._again.discard(thread_id)
                await self._run(lambda: self._auto_prune_steps(thread_id))
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
            self._again.discard(thread_id)

    async def wait_for_pruning(self) -> None:
        """Wait until every background auto-prune has finished."""
        while self._pruning:
            await asyncio.gather(*builtins.list(self._pruning.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Wait for the background auto-prunes, then close the prunes' own pool (the
        saver's client is the saver's to close: `async with` closes one it made)."""
        await self.wait_for_pruning()
        if self._own_client is not None:
            await self._own_client.aclose(close_connection_pool=True)
            self._own_client, self._pruner = None, None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        await super().__aexit__(exc_type, exc, tb)


__all__ = ["AsyncPruningRedisSaver", "PruningRedisSaver", "resolve_keep"]
