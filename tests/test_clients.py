"""Any redis-py client: sync or asyncio, RESP2 or RESP3, decoded replies or bytes."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio
from helpers import chat, chat_graph, checkpoint_ids, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver

from lgprune import AsyncPruner, InvalidArgumentError, Pruner, PruneResult

CLIENTS = [(2, False), (2, True), (3, False), (3, True)]


@pytest.mark.parametrize(("protocol", "decode"), CLIENTS)
def test_sync_clients(redis_url: str, saver: RedisSaver, protocol: int, decode: bool) -> None:
    chat(chat_graph(saver), "c", turns=4)
    n = len(checkpoint_ids(saver, "c"))
    client = redis.Redis.from_url(redis_url, protocol=protocol, decode_responses=decode)
    result = Pruner(client).prune("c", 3)
    assert (result.checkpoints_deleted, result.checkpoints_kept) == (n - 3, 3)


@pytest.mark.parametrize(("protocol", "decode"), CLIENTS)
async def test_async_clients(redis_url: str, saver: RedisSaver, protocol: int, decode: bool) -> None:
    chat(chat_graph(saver), "c", turns=4)
    n = len(checkpoint_ids(saver, "c"))
    client = redis.asyncio.Redis.from_url(redis_url, protocol=protocol, decode_responses=decode)
    try:
        result = await AsyncPruner(client).prune("c", 3)
    finally:
        await client.aclose()
    assert (result.checkpoints_deleted, result.checkpoints_kept) == (n - 3, 3)


async def test_async_and_sync_agree(redis_url: str, r: redis.Redis, saver: RedisSaver) -> None:
    results: list[PruneResult] = []
    for flavour in ("sync", "async"):
        r.flushall()
        saver.setup()
        put_checkpoints(saver, "t", 40, writes=3)
        if flavour == "sync":
            results.append(Pruner(r, budget=25).prune("t", 5))
        else:
            async with redis.asyncio.Redis.from_url(redis_url) as client:
                results.append(await AsyncPruner(client, budget=25).prune("t", 5))
    assert results[0] == results[1]
    assert results[0].calls > 1 and results[0].checkpoints_deleted == 35


async def test_async_bad_input_is_refused_before_any_command(
    r: redis.Redis, saver: RedisSaver, redis_url: str
) -> None:
    put_checkpoints(saver, "t", 3)
    before = snapshot(r)
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        with pytest.raises(InvalidArgumentError):
            await AsyncPruner(client).prune("t", -1)
    assert snapshot(r) == before
    assert not r.function_list(library="lgprune")  # not even the library was loaded


def test_from_url(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "u", 4)
    assert Pruner.from_url(redis_url).prune("u", 1).checkpoints_deleted == 3


def test_budget_bounds_every_call(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "b", 30, writes=4)
    Pruner(r).install()
    calls = []
    while True:
        reply = r.fcall("lgprune_thread", 0, "b", 2, "BUDGET", 13)
        fields = dict(zip(reply[::2], reply[1::2], strict=True))
        calls.append(fields)
        if not fields[b"more"]:
            break
    assert all(c[b"keys_deleted"] <= 13 for c in calls)
    assert sum(c[b"checkpoints_deleted"] for c in calls) == 28
    assert len(checkpoint_ids(saver, "b")) == 2
    assert len(list(r.scan_iter(match="checkpoint_write:b:*"))) == 8


def test_sync_and_async_share_one_body_of_every_method() -> None:
    """Each method is written once: the async twin is the same steps, run by an AsyncRunner."""
    import inspect

    from lgprune.langgraph import AsyncPruningRedisSaver, PruningRedisSaver
    from lgprune.pruner import Shell

    sync, asynchronous = Pruner(redis.Redis()), AsyncPruner(redis.asyncio.Redis())
    for name in ("install", "prune", "prune_many", "sweep", "stats"):
        assert name in Shell.__dict__ and name not in Pruner.__dict__ and name not in AsyncPruner.__dict__
        ours, theirs = getattr(sync, name), getattr(asynchronous, name)
        assert inspect.signature(ours) == inspect.signature(theirs) and ours.__doc__ == theirs.__doc__
        assert inspect.iscoroutinefunction(theirs) and not inspect.iscoroutinefunction(ours)
    for plain, twin in (("list", "alist"), ("prune", "aprune"), ("delete_thread", "adelete_thread")):
        assert PruningRedisSaver.__dict__[plain] is AsyncPruningRedisSaver.__dict__[twin]
