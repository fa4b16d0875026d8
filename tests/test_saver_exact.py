"""The drop-in savers list exactly the thread asked for, and construct over any client."""

from __future__ import annotations

import inspect
import logging
from typing import Any
from unittest.mock import Mock

import pytest
import redis
import redis.asyncio
from helpers import chat, chat_graph, checkpoint_ids, config_of, put_checkpoints
from langgraph.checkpoint.redis import AsyncRedisSaver, RedisSaver

from lgprune.langgraph import AsyncPruningRedisSaver, PruningRedisSaver

# ids that RedisSaver.list confuses: case variants, comma-joined ids, padded ids,
# query syntax, escapes, unicode, the empty id
HOSTILE = [
    "wang1",
    "Wang1",
    "a",
    "a,b",
    " a ",
    "a b",
    "a:b",
    "x} | @thread_id:{*",
    "*",
    "-a",
    "a|b",
    "\\",
    "\\:",
    "\\$t",
    "ünïcode",
    "ÜNÏCODE",
    "",
]


def thread_of(item: Any) -> str:
    return str(item.config["configurable"]["thread_id"])


@pytest.fixture
def written(r: redis.Redis) -> PruningRedisSaver:
    """Every hostile id with 4 checkpoints, written by the plain saver."""
    plain = RedisSaver(redis_client=r)
    plain.setup()
    for thread_id in HOSTILE:
        put_checkpoints(plain, thread_id, 4, writes=1)
    return PruningRedisSaver(redis_client=r)


def test_the_plain_saver_lists_other_threads(r: redis.Redis, written: PruningRedisSaver) -> None:
    """What the README says of RedisSaver.list: the leak this fixes (fails if the saver fixed it)."""
    plain = RedisSaver(redis_client=r)
    assert {thread_of(i) for i in plain.list(config_of("wang1"))} == {"wang1", "Wang1"}
    assert {thread_of(i) for i in plain.list(config_of("a"))} >= {"a", "a,b"}
    assert list(plain.list(config_of("a,b"))) == []


@pytest.mark.parametrize("thread_id", HOSTILE)
def test_list_returns_exactly_the_thread_asked_for(written: PruningRedisSaver, thread_id: str) -> None:
    items = list(written.list(config_of(thread_id)))
    assert [thread_of(i) for i in items] == [thread_id] * 4
    ids = [i.config["configurable"]["checkpoint_id"] for i in items]
    assert ids == checkpoint_ids(written, thread_id)  # RedisSaver's order: newest first
    limited = list(written.list(config_of(thread_id), limit=3))
    assert [i.config["configurable"]["checkpoint_id"] for i in limited] == ids[:3]


@pytest.mark.parametrize("thread_id", ["wang1", "Wang1", "a", "a,b"])
async def test_alist_returns_exactly_the_thread_asked_for(
    r: redis.Redis, redis_url: str, thread_id: str
) -> None:
    async with AsyncRedisSaver.from_conn_string(redis_url) as plain:
        await plain.asetup()
        for t in ("wang1", "Wang1", "a", "a,b"):
            for step in range(3):
                await plain.aput(
                    {"configurable": {"thread_id": t, "checkpoint_ns": ""}},
                    {**_checkpoint(step)},
                    {"source": "loop", "step": step, "parents": {}},
                    {},
                )
    async with AsyncPruningRedisSaver.from_conn_string(redis_url) as saver:
        items = [i async for i in saver.alist(config_of(thread_id))]
        assert [thread_of(i) for i in items] == [thread_id] * 3
        limited = [i async for i in saver.alist(config_of(thread_id), limit=2)]
        assert [thread_of(i) for i in limited] == [thread_id] * 2
        assert limited == items[:2]


def _checkpoint(step: int) -> Any:
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"step": step}
    checkpoint["channel_versions"] = {"step": step + 1}
    return checkpoint


def test_a_limit_is_filled_from_the_thread_even_when_a_variant_is_newer(r: redis.Redis) -> None:
    """The saver's first page holds only Wang1's (newer) checkpoints; ours asks again."""
    saver = PruningRedisSaver(redis_client=r)
    saver.setup()
    put_checkpoints(saver, "wang1", 3)
    put_checkpoints(saver, "Wang1", 20)
    assert [thread_of(i) for i in saver.list(config_of("wang1"), limit=3)] == ["wang1"] * 3
    assert [thread_of(i) for i in saver.list(config_of("Wang1"), limit=25)] == ["Wang1"] * 20


def test_filter_before_and_namespace_keep_their_meaning(r: redis.Redis) -> None:
    saver = PruningRedisSaver(redis_client=r)
    saver.setup()
    put_checkpoints(saver, "wang1", 5)
    put_checkpoints(saver, "Wang1", 5)
    put_checkpoints(saver, "wang1", 2, ns="child:1")
    root = list(saver.list({"configurable": {"thread_id": "wang1", "checkpoint_ns": ""}}))
    assert len(root) == 5 and all(i.config["configurable"]["checkpoint_ns"] == "" for i in root)
    assert len(list(saver.list(config_of("wang1", ns="child:1")))) == 2
    step_3 = list(saver.list(config_of("wang1"), filter={"step": 3}))
    assert [(thread_of(i), i.metadata["step"]) for i in step_3] == [("wang1", 3)]
    by_filter = list(saver.list(None, filter={"thread_id": "Wang1"}))
    assert {thread_of(i) for i in by_filter} == {"Wang1"} and len(by_filter) == 5
    plain = RedisSaver(redis_client=r)
    newest = next(iter(saver.list(config_of("wang1")))).config
    assert [i.config for i in saver.list(config_of("wang1"), before=newest)] == [
        i.config
        for i in plain.list(config_of("wang1"), before=newest)
        if thread_of(i) == "wang1" and i.config["configurable"]["checkpoint_ns"] == ""
    ]


def test_get_state_history_shows_only_the_users_own_turns(r: redis.Redis) -> None:
    saver = PruningRedisSaver(redis_client=r)
    saver.setup()
    app = chat_graph(saver)
    chat(app, "wang1", 2)
    chat(app, "Wang1", 3)
    history = list(app.get_state_history(config_of("wang1")))
    assert {h.config["configurable"]["thread_id"] for h in history} == {"wang1"}
    assert len(history) == len(checkpoint_ids(saver, "wang1"))


async def test_savers_construct_over_any_client_as_redis_saver_does() -> None:
    for client in (Mock(), Mock(spec=redis.Redis)):
        assert PruningRedisSaver(redis_client=client)._redis is client
    assert AsyncPruningRedisSaver(redis_client=Mock())._redis is not None


class Traced:
    """A client wrapper, as tracing libraries make: not a redis.Redis, but it works."""

    def __init__(self, inner: redis.Redis) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.skipif(
    "keep_last" not in inspect.signature(RedisSaver.prune).parameters,
    reason="this langgraph-checkpoint-redis has no client-side prune (added in 0.5)",
)
def test_a_client_lgprune_cannot_drive_falls_back_to_the_savers_prune(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    saver = PruningRedisSaver(redis_client=Traced(r), keep_last=3, slack=1)
    saver.setup()
    with caplog.at_level(logging.WARNING, logger="lgprune"):
        chat(chat_graph(saver), "t", 4)
        assert len(checkpoint_ids(saver, "t")) == 3  # auto-prune, client-side
        saver.prune(["t"], keep_last=2)
        assert len(checkpoint_ids(saver, "t")) == 2
        saver.delete_thread("t")
        assert checkpoint_ids(saver, "t") == []
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Traced, not a redis.Redis" in warnings[0] and "Cluster" not in warnings[0]
    assert r.function_list() == []  # lgprune's library was never needed


def test_a_cluster_client_is_named_as_the_cause() -> None:
    from lgprune.langgraph import unusable_client

    cluster = redis.asyncio.RedisCluster(host="127.0.0.1", port=1)  # connects lazily
    reason = unusable_client(cluster, redis.asyncio.Redis, "redis.asyncio.Redis")
    assert reason is not None and "Redis Cluster client (RedisCluster)" in reason
    assert unusable_client(Mock(), redis.Redis, "redis.Redis") == (
        "the saver's client is a unittest.mock.Mock, not a redis.Redis"
    )
