"""The drop-in savers: LangGraph's conformance suite, prune strategies, and auto-prune."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from unittest.mock import AsyncMock

import pytest
import redis
from helpers import (
    approve_turns,
    chat,
    chat_graph,
    checkpoint_ids,
    config_of,
    delta_graph,
    needs_delta_saver,
    put_checkpoints,
    subgraph_graph,
    without_ids,
)
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityResult
from langgraph.checkpoint.redis import AsyncRedisSaver, RedisSaver
from langgraph.types import Command, StateSnapshot

from lgprune import InvalidArgumentError
from lgprune.langgraph import AsyncPruningRedisSaver, PruningRedisSaver


class AsyncView(BaseCheckpointSaver[Any]):
    """A sync saver's methods as the async ones the (async-only) conformance suite calls."""

    def __init__(self, saver: RedisSaver) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver

    def get_next_version(self, current: Any, channel: Any) -> Any:
        return self.saver.get_next_version(current, channel)

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.saver.get_tuple, config)

    async def alist(
        self, config: Any, *, filter: Any = None, before: Any = None, limit: Any = None
    ) -> AsyncIterator[Any]:
        items = await asyncio.to_thread(
            lambda: list(self.saver.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await asyncio.to_thread(self.saver.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.saver.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.saver.delete_thread, thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.saver.prune, thread_ids, strategy=strategy)


async def conformance(redis_url: str, saver_class: type, *, sync: bool) -> dict[str, CapabilityResult]:
    client = redis.Redis.from_url(redis_url)

    @checkpointer_test(name=saver_class.__name__)
    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        client.flushall()
        if sync:
            with saver_class.from_conn_string(redis_url) as saver:
                saver.setup()
                yield AsyncView(saver)
        else:
            async with saver_class.from_conn_string(redis_url) as saver:
                await saver.asetup()
                yield saver

    report = await validate(factory)
    client.close()
    return report.results


@pytest.mark.parametrize(
    ("ours", "plain", "sync"),
    [(AsyncPruningRedisSaver, AsyncRedisSaver, False), (PruningRedisSaver, RedisSaver, True)],
    ids=["async", "sync"],
)
async def test_conformance_prune_8_of_8_and_no_regression(
    r: redis.Redis, redis_url: str, ours: type, plain: type, sync: bool
) -> None:
    baseline = await conformance(redis_url, plain, sync=sync)
    results = await conformance(redis_url, ours, sync=sync)
    prune = results["prune"]
    assert (prune.tests_passed, prune.tests_failed) == (8, 0), prune.failures
    assert (baseline["prune"].tests_passed, baseline["prune"].tests_failed) == (6, 2)  # what we fix
    for capability, before in baseline.items():
        after = results[capability]
        assert after.detected == before.detected, capability
        assert after.tests_passed >= before.tests_passed, (capability, after.failures)
        if before.passed:
            assert after.passed, (capability, after.failures)


def test_prune_strategies(r: redis.Redis) -> None:
    saver = PruningRedisSaver(redis_client=r)
    saver.setup()
    for t in ("a", "b", "c", "d"):
        put_checkpoints(saver, t, 6)
    saver.prune(["a"])
    saver.prune(["b"], strategy="delete")
    saver.prune(["c"], keep_last=3)
    saver.prune([])
    with pytest.raises(InvalidArgumentError):
        saver.prune(["d"], strategy="newest")
    assert [len(checkpoint_ids(saver, t)) for t in "abcd"] == [1, 0, 3, 6]


def test_delete_thread_is_server_side_and_complete(r: redis.Redis) -> None:
    saver = PruningRedisSaver(redis_client=r, budget=10)  # forces many bounded calls
    saver.setup()
    chat(chat_graph(saver), "bye", turns=6)
    put_checkpoints(saver, "stay", 3)
    saver.delete_thread("bye")
    assert not [k for k in r.scan_iter() if b"bye" in k]
    assert len(checkpoint_ids(saver, "stay")) == 3


def visible(snapshot: StateSnapshot) -> Any:
    """What a user sees of a state, without the ids that differ between threads."""
    return (
        repr(without_ids(snapshot.values)),
        snapshot.next,
        tuple(
            (t.name, visible(t.state) if isinstance(t.state, StateSnapshot) else None) for t in snapshot.tasks
        ),
    )


@pytest.fixture
def shadow(r: redis.Redis) -> Iterator[RedisSaver]:
    saver = RedisSaver(redis_client=r)
    saver.setup()
    yield saver


def test_auto_prune_keeps_a_chat_within_keep_last_plus_slack(r: redis.Redis, shadow: RedisSaver) -> None:
    with PruningRedisSaver.from_conn_string(redis_client=r, keep_last=4, slack=2) as saver:
        app, twin = chat_graph(saver), chat_graph(shadow)
        for turn in range(15):
            message = {"messages": [HumanMessage(content=f"turn {turn}")]}
            app.invoke(message, config_of("pruned"), durability="exit")
            twin.invoke(message, config_of("kept"), durability="exit")
            assert len(checkpoint_ids(saver, "pruned")) <= 4 + 2
            assert visible(app.get_state(config_of("pruned"))) == visible(twin.get_state(config_of("kept")))
    assert len(checkpoint_ids(shadow, "kept")) == 15


@needs_delta_saver
async def test_async_auto_prune_keeps_delta_and_subgraph_state(redis_url: str, r: redis.Redis) -> None:
    counted = RedisSaver(redis_client=r)  # checkpoint_ids reads keys with a sync client
    async with (
        AsyncRedisSaver.from_conn_string(redis_url) as plain,
        AsyncPruningRedisSaver.from_conn_string(redis_url, keep_last=2, slack=1) as saver,
    ):
        for make, step in ((delta_graph, _delta_turn), (subgraph_graph, _approval_turn)):
            app, twin = make(saver), make(plain)
            for turn in range(8):
                await step(app, "pruned", turn)
                await step(twin, "kept", turn)
                await saver.wait_for_pruning()
                assert len(checkpoint_ids(counted, "pruned")) <= 2 + 1
                ours = await app.aget_state(config_of("pruned"), subgraphs=True)
                theirs = await twin.aget_state(config_of("kept"), subgraphs=True)
                assert visible(ours) == visible(theirs), turn
            await saver.aprune(["pruned", "kept"], strategy="delete")


async def _delta_turn(app: Any, thread_id: str, turn: int) -> None:
    await app.ainvoke({"msgs": [f"user {turn}"]}, config_of(thread_id), durability="exit")


async def _approval_turn(app: Any, thread_id: str, turn: int) -> None:
    if turn % 2 == 0:
        await app.ainvoke(
            {"log": [f"in{turn}"]}, config_of(thread_id), durability="exit"
        )  # waits for approval
    else:
        await app.ainvoke(Command(resume=f"ok{turn}"), config_of(thread_id), durability="exit")


async def test_async_close_waits_for_background_prunes(redis_url: str, r: redis.Redis) -> None:
    async with AsyncPruningRedisSaver.from_conn_string(redis_url, keep_last=1, slack=1) as saver:
        app = chat_graph(saver)
        for turn in range(3):
            await app.ainvoke({"messages": [HumanMessage(content=str(turn))]}, config_of("bg"))
        pending = dict(saver._pruning)
    assert all(task.done() for task in pending.values())
    assert len(checkpoint_ids(RedisSaver(redis_client=r), "bg")) == 1


async def test_puts_during_a_running_auto_prune_are_pruned_after_it(redis_url: str, r: redis.Redis) -> None:
    # a thread's prune has run in Redis but its task has not ended when the next puts are due:
    # those puts must be pruned too, or the thread ends above keep_last + slack
    async with AsyncPruningRedisSaver.from_conn_string(redis_url, keep_last=1, slack=1) as saver:
        gate, calls = asyncio.Event(), []
        run_call = saver._call

        async def held_after_prune(whose: str, name: str, args: Any, kwargs: Any) -> Any:
            answer = await run_call(whose, name, args, kwargs)
            if name == "prune_many":
                calls.append(name)
                await gate.wait()
            return answer

        saver._call = held_after_prune  # type: ignore[method-assign]
        app = chat_graph(saver)
        for turn in range(3):
            await app.ainvoke({"messages": [HumanMessage(content=str(turn))]}, config_of("held"))
        assert calls == ["prune_many"]  # one prune ran; every later put was due while it was held
        gate.set()
    assert len(checkpoint_ids(RedisSaver(redis_client=r), "held")) <= 1 + 1


def test_auto_prune_failures_are_logged_not_raised(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    saver = PruningRedisSaver(redis_client=r, keep_last=1, slack=1)
    saver.setup()
    r.execute_command("FT.DROPINDEX", "checkpoint_write")  # the prune will refuse
    with caplog.at_level(logging.ERROR, logger="lgprune"):
        approve_turns(subgraph_graph(saver), "t", turns=1, leave_open=False)
    assert "auto-prune of thread 't' failed" in caplog.text
    assert checkpoint_ids(saver, "t")


def test_keep_last_is_checked(r: redis.Redis) -> None:
    with pytest.raises(InvalidArgumentError):
        PruningRedisSaver(redis_client=r, keep_last=-1)
    with pytest.raises(InvalidArgumentError):
        AsyncPruningRedisSaver(redis_client=redis.asyncio.Redis(), keep_last=2, slack=0)


async def test_prunes_never_take_the_savers_own_connections(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    threads = [f"c{i}" for i in range(8)]
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 6)
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=4)
    pruning = AsyncPruningRedisSaver(redis_client=client, keep_last=2, prune_connections=2)
    held = [await client.connection_pool.get_connection() for _ in range(4)]  # the app's own traffic
    await asyncio.gather(*(pruning.aprune([t], keep_last=2) for t in threads))  # 8 prunes, 2 connections
    assert [len(checkpoint_ids(saver, t)) for t in threads] == [2] * len(threads)
    for connection in held:
        await client.connection_pool.release(connection)
    async with pruning:
        pass
    await client.aclose()


async def test_auto_prune_with_more_conversations_than_connections(
    redis_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # sized as the README says: a blocking pool for the saver, 2 connections for its prunes
    client = redis.asyncio.Redis(
        connection_pool=redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=8)
    )
    threads = [f"c{i}" for i in range(16)]
    with caplog.at_level(logging.WARNING, logger="lgprune"):
        async with AsyncPruningRedisSaver(
            redis_client=client, keep_last=2, slack=1, prune_connections=2
        ) as saver:
            await saver.asetup()
            app = chat_graph(saver)

            async def converse(thread_id: str) -> None:
                for turn in range(6):
                    await app.ainvoke({"messages": [HumanMessage(content=str(turn))]}, config_of(thread_id))

            await asyncio.gather(*(converse(t) for t in threads))
    await client.aclose()
    assert "failed" not in caplog.text and "dropped" not in caplog.text
    counted = RedisSaver(redis_client=r)
    for t in threads:
        # a write the graph stores after its checkpoint went (durability "async") leaves a
        # placeholder: no checkpoint, but an orphan for the orphan sweep (see Known limits)
        keys = [f"checkpoint:{t}:__empty__:{i}" for i in checkpoint_ids(counted, t)]
        assert len([k for k in keys if r.json().get(k, "$.checkpoint_id")]) <= 2 + 1


def test_a_saver_left_open_logs_once_how_many_prunes_it_dropped(
    redis_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    RedisSaver(redis_client=r).setup()

    async def leave_open() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        saver = AsyncPruningRedisSaver(redis_client=client, keep_last=1, slack=1, prune_connections=1)
        assert saver.pruner is not None
        await saver.pruner.client.connection_pool.get_connection()  # the prunes' one connection, busy
        app = chat_graph(saver)
        for thread_id in ("a", "b", "c"):
            await app.ainvoke({"messages": [HumanMessage(content="hi")]}, config_of(thread_id))
        assert len(saver._pruning) == 3  # waiting for a connection when the loop ends

    with caplog.at_level(logging.WARNING, logger="lgprune"):
        asyncio.run(leave_open())
    dropped = [rec.getMessage() for rec in caplog.records if "dropped" in rec.getMessage()]
    assert len(dropped) == 1 and dropped[0].startswith("lgprune: 3 auto-prune(s) dropped")


class PoolIsAMock(redis.asyncio.Redis):
    """The client the saver's own test suite passes (tests/test_async_cluster_mode.py of
    langgraph-checkpoint-redis): a redis.asyncio.Redis whose pool is a mock."""

    def __init__(self) -> None:  # no super().__init__: no real pool, no connection
        self.connection_pool = AsyncMock()


async def test_the_async_saver_constructs_where_the_plain_saver_does(r: redis.Redis) -> None:
    client = PoolIsAMock()
    AsyncRedisSaver(redis_client=client)
    saver = AsyncPruningRedisSaver(redis_client=client, keep_last=2)
    assert saver.pruner is None  # lgprune cannot send commands through a mock: none made ...
    assert saver.fallback is not None and "AsyncMock for its connection pool" in saver.fallback
    assert client.connection_pool.mock_calls == []  # ... and nothing read from it or sent
    assert r.dbsize() == 0 and not r.function_list()


class Routed(redis.asyncio.ConnectionPool):
    """A pool that finds its server itself, as a Sentinel pool does: its connection_kwargs
    do not say where the server is (they name a port nothing listens on)."""

    def __init__(self, url: str) -> None:
        super().__init__(host="127.0.0.1", port=1)
        self.server = redis.asyncio.Redis.from_url(url).connection_pool.connection_kwargs

    def make_connection(self) -> Any:
        return self.connection_class(**self.server)


async def test_a_pool_whose_settings_cannot_be_copied_prunes_over_the_savers_own_client(
    redis_url: str, saver: RedisSaver, caplog: pytest.LogCaptureFixture
) -> None:
    for thread_id in ("a", "b"):
        put_checkpoints(saver, thread_id, 5)
    client = redis.asyncio.Redis(connection_pool=Routed(redis_url))
    pruning = AsyncPruningRedisSaver(redis_client=client, prune_connections=3)
    with caplog.at_level(logging.WARNING, logger="lgprune"):
        await pruning.aprune(["a"], keep_last=2)
        await pruning.adelete_thread("b")
    assert (len(checkpoint_ids(saver, "a")), checkpoint_ids(saver, "b")) == (2, [])
    assert pruning.pruner is not None and pruning.pruner.client is client
    advice = [rec.getMessage() for rec in caplog.records]
    assert len(advice) == 1 and "Routed" in advice[0] and "plus 3 prunes at once" in advice[0]
    await pruning.aclose()
    assert await client.ping()  # the saver's client stays the saver's (closing it is not ours)
    await client.aclose()


async def test_the_prune_pool_is_made_on_the_first_prune_with_what_from_conn_string_was_given(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 9)
    options = {"keep_last": 3, "slack": 1, "budget": 50, "prune_connections": 2}
    async with AsyncPruningRedisSaver.from_conn_string(redis_url, **options) as pruning:
        assert (pruning.auto.keep_last, pruning.auto.slack) == (3, 1)
        assert pruning._own_client is None  # nothing made yet
        await pruning.aprune(["t"], keep_last=4)
        own = pruning._own_client
        assert own is not None and pruning.pruner is not None and pruning.pruner.client is own
        assert own.connection_pool.max_connections == 2
        assert pruning.pruner.options.budget == 50
    assert pruning._own_client is None and len(checkpoint_ids(saver, "t")) == 4
