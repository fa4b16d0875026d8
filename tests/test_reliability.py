"""Reliability: arbitrary ids, concurrent writers, and crashes of the server or the client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import chat_graph, checkpoint_ids, config_of, delta_graph, put_checkpoints, without_ids
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.redis import RedisSaver

from lgprune import InvalidArgumentError, Pruner
from lgprune.embedded import EmbeddedRedis
from lgprune.langgraph import AsyncPruningRedisSaver, PruningRedisSaver


def dump_all(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def orphans(client: redis.Redis) -> list[bytes]:
    """Writes, registries and latest pointers whose checkpoint does not exist."""
    found = []
    for key in client.scan_iter(match="checkpoint_write:*", count=1000):
        doc = client.json().get(key)
        if not client.exists(f"checkpoint:{doc['thread_id']}:{doc['checkpoint_ns']}:{doc['checkpoint_id']}"):
            found.append(key)
    for key in client.scan_iter(match="write_keys_zset:*", count=1000):
        if not client.exists(b"checkpoint:" + key[len(b"write_keys_zset:") :]):
            found.append(key)
    for key in client.scan_iter(match="checkpoint_latest:*", count=1000):
        if not client.exists(client.get(key)):
            found.append(key)
    return found


# --- any thread id -----------------------------------------------------------------

# any text, with the characters that mean something to RediSearch or to keys made common
thread_ids = st.text(
    st.one_of(st.sampled_from("\\:,{}$*|@- \tAa"), st.characters(codec="utf-8")), max_size=24
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=thread_ids, other=thread_ids)
def test_pruning_any_thread_leaves_every_other_thread_byte_identical(
    r: redis.Redis, target: str, other: str
) -> None:
    r.flushall()
    saver = RedisSaver(redis_client=r)
    saver.setup()
    put_checkpoints(saver, target, 4, writes=1)
    mine = set(r.scan_iter(count=1000))
    neighbours = {
        other,
        target.swapcase(),
        target.upper(),
        f"{target}:x",
        f"x:{target}",
        f"{target},y",
        f" {target} ",
        f"{target}*",
    } - {target}
    for thread_id in neighbours:
        put_checkpoints(saver, thread_id, 3, writes=1)
    before = {k: v for k, v in dump_all(r).items() if k not in mine}
    try:
        result = Pruner(r).prune(target, 1)
    except InvalidArgumentError:  # an id RediSearch cannot match: refused, nothing deleted
        assert not target.split("\x00")[0].strip(" \t\n\r\x0b\x0c,")
        assert set(r.scan_iter(count=1000)) >= mine
    else:
        assert result.checkpoints_deleted == 3
    assert {k: v for k, v in dump_all(r).items() if k not in mine} == before


# parts of keys: short, with the colons, commas and backslashes that make keys ambiguous
parts = st.text(st.sampled_from("ab:,\\ A"), min_size=1, max_size=4)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=parts,
    other=parts,
    ns=st.sampled_from(["", "sub", "s:b"]),
    other_ns=st.sampled_from(["", "sub", "s:b", "b:a"]),
    ids=st.lists(parts, min_size=3, max_size=14, unique=True),  # over 11: listed in parts
    other_ids=st.lists(parts, min_size=1, max_size=3, unique=True),
    tasks=st.lists(parts, min_size=1, max_size=2, unique=True),
    budget=st.sampled_from([10, 2000]),
)
@example("t", "u", "sub", "", ["0", "a", "a:b"], ["c"], ["x"], 2000)  # "a:b" kept, "a" not
def test_a_write_goes_only_with_its_own_checkpoint(
    r: redis.Redis,
    target: str,
    other: str,
    ns: str,
    other_ns: str,
    ids: list[str],
    other_ids: list[str],
    tasks: list[str],
    budget: int,
) -> None:
    """Ids, namespaces and task ids with colons: a write key cannot say whose write it is."""
    r.flushall()
    saver = RedisSaver(redis_client=r)
    saver.setup()

    def put(thread_id: str, namespace: str, checkpoint_ids: list[str]) -> None:
        config = config_of(thread_id, ns=namespace)
        for step, checkpoint_id in enumerate(checkpoint_ids):
            checkpoint = {**empty_checkpoint(), "id": checkpoint_id}
            config = saver.put(config, checkpoint, {"source": "loop", "step": step, "parents": {}}, {})
            for task in tasks:
                saver.put_writes(config, [("step", step)], task_id=task)

    assume(other != target)
    stored_ns = ns or "__empty__"
    checkpoint_key = {c: f"checkpoint:{target}:{stored_ns}:{c}".encode() for c in ids}
    write_keys = {
        c: [f"checkpoint_write:{target}:{stored_ns}:{c}:{t}:0".encode() for t in tasks] for c in ids
    }
    assume(len({k for keys in write_keys.values() for k in keys}) == len(ids) * len(tasks))
    put(other, other_ns, other_ids)
    theirs = dump_all(r)
    put(target, ns, ids)
    before = dump_all(r)
    assume(all(before.get(k) == v for k, v in theirs.items()))  # no key shared by both threads
    latest = r.get(f"checkpoint_latest:{target}:{stored_ns}")

    try:
        Pruner(r, budget=budget).prune(target, 1)
    except InvalidArgumentError:  # only commas and spaces: refused
        assert not target.strip(" ,")

    after = dump_all(r)
    assert set(after) <= set(before)
    assert {k: after.get(k) for k in theirs} == theirs
    assert latest in after
    for c in ids:
        if checkpoint_key[c] in after:
            assert [after.get(k) for k in write_keys[c]] == [before[k] for k in write_keys[c]]
        else:
            assert not set(write_keys[c]) & set(after)
            assert f"write_keys_zset:{target}:{stored_ns}:{c}".encode() not in after


# --- concurrent writers --------------------------------------------------------------

TURNS = 12
KEEP = 3


def say(turn: int) -> dict[str, Any]:
    return {"messages": [HumanMessage(content=f"turn {turn}")]}


@pytest.mark.slow
def test_concurrent_writers_sweeps_and_prunes(r: redis.Redis, redis_url: str) -> None:
    """Graphs write through every kind of saver while sweeps and prunes run."""
    base = RedisSaver(redis_client=r)
    base.setup()
    done = threading.Event()
    errors: list[BaseException] = []

    def sync_conversation(thread_id: str, new_saver: Any, make: Any, message: Any) -> None:
        saver = new_saver()  # one per thread: a RedisSaver shared by threads loses DeltaChannel writes itself
        saver.setup()
        app = make(saver)
        for turn in range(TURNS):
            app.invoke(message(turn), config_of(thread_id), durability="exit")

    async def async_conversations() -> None:
        async with AsyncPruningRedisSaver.from_conn_string(redis_url, keep_last=KEEP, slack=1) as saver:
            apps = [chat_graph(saver) for _ in range(2)]
            for turn in range(TURNS):
                await asyncio.gather(
                    *(
                        app.ainvoke(say(turn), config_of(f"async:{i}"), durability="exit")
                        for i, app in enumerate(apps)
                    )
                )

    def janitor() -> None:
        pruner = Pruner(redis.Redis.from_url(redis_url), budget=50)
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            try:
                pruner.sweep(KEEP)
                pruner.prune_many(["plain:0", "delta:0", "sync:1"], KEEP)
            except BaseException as error:
                errors.append(error)
                return

    def auto() -> PruningRedisSaver:
        return PruningRedisSaver(redis_client=redis.Redis.from_url(redis_url), keep_last=KEEP, slack=1)

    def plain() -> RedisSaver:
        return RedisSaver(redis_client=redis.Redis.from_url(redis_url))

    jobs = [
        ("sync:0", auto, chat_graph, say),
        ("sync:1", auto, chat_graph, say),
        ("plain:0", plain, chat_graph, say),
        ("plain:1", plain, chat_graph, say),
        ("delta:0", auto, delta_graph, lambda turn: {"msgs": [f"user {turn}"]}),
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        cleaner = pool.submit(janitor)
        writers = [pool.submit(sync_conversation, *job) for job in jobs]
        writers.append(pool.submit(asyncio.run, async_conversations()))
        try:
            for writer in writers:
                writer.result(timeout=300)
        finally:
            done.set()
        cleaner.result(timeout=300)
    assert not errors

    Pruner(r).sweep(KEEP)
    Pruner(r).sweep(KEEP, orphans=True, grace=0.001)
    assert orphans(r) == []
    for thread_id, _, make, message in [
        *jobs,
        ("async:0", None, chat_graph, say),
        ("async:1", None, chat_graph, say),
    ]:
        kept = checkpoint_ids(base, thread_id)
        delta = thread_id.startswith("delta")
        assert len(kept) == KEEP or (delta and len(kept) > KEEP), (thread_id, len(kept))
        shadow = make(InMemorySaver())  # the same conversation on a saver that never prunes
        for turn in range(TURNS):
            shadow.invoke(message(turn), config_of("shadow"), durability="exit")
        expected = [without_ids(s.values) for s in shadow.get_state_history(config_of("shadow"))][: len(kept)]
        actual = [without_ids(make(base).get_state(config_of(thread_id, cid)).values) for cid in kept]
        assert actual == expected, thread_id


# --- crashes ------------------------------------------------------------------------

CRASH_THREADS = 10_000


def build_many(url: str, count: int) -> dict[str, str]:
    """`count` threads of 3 checkpoints (1 write each); returns each thread's newest id."""
    saver = RedisSaver(redis_client=redis.Redis.from_url(url))
    saver.setup()

    def one(i: int) -> tuple[str, str]:
        return f"crash:{i}", put_checkpoints(saver, f"crash:{i}", 3, writes=1)[-1]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, range(count)))


def assert_pruned(client: redis.Redis, newest: dict[str, str]) -> None:
    checkpoints = {key.decode() for key in client.scan_iter(match="checkpoint:crash:*", count=5000)}
    assert checkpoints == {f"checkpoint:{t}:__empty__:{cid}" for t, cid in newest.items()}
    assert sum(1 for _ in client.scan_iter(match="checkpoint_write:*", count=5000)) == len(newest)
    assert orphans(client) == []


@pytest.mark.slow
def test_killed_client_and_killed_server_mid_sweep_lose_nothing(tmp_path: Path) -> None:
    with EmbeddedRedis(appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        newest = build_many(server.url, CRASH_THREADS)
        Pruner(client).install()

        # the client process dies (SIGKILL) in the middle of its sweep
        errors = tmp_path / "sweeper.err"
        with errors.open("w") as stderr:
            sweeper = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lgprune",
                    "sweep",
                    "--keep",
                    "1",
                    "--budget",
                    "60",
                    "--url",
                    server.url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        keys = client.dbsize()
        while client.dbsize() > keys - 3000 and sweeper.poll() is None:
            time.sleep(0.01)
        ended = sweeper.poll()
        sweeper.kill()
        sweeper.wait()
        assert ended is None, f"the sweeper ended by itself ({ended}): {errors.read_text()[-2000:]}"
        assert orphans(client) == []  # every call was whole

        # the server dies (SIGKILL, AOF fsync always) in the middle of the next sweep
        calls, acknowledged = 0, 0

        def kill_after_some_calls(_: object) -> None:
            nonlocal calls, acknowledged
            calls += 1
            if calls == 40:
                acknowledged = client.dbsize()
                server.kill()

        with pytest.raises(redis.ConnectionError):
            Pruner(redis.Redis.from_url(server.url), budget=60).sweep(1, on_progress=kill_after_some_calls)
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.dbsize() == acknowledged <= keys - 3000  # what both sweeps did is still there
        assert orphans(client) == []

        Pruner(client).sweep(1)  # started again: finishes the job
        assert_pruned(client, newest)
