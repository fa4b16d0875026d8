"""What a crash leaves behind, and the rules for it.

The saver's `put_writes` stores a checkpoint's writes, their registry and, when the
checkpoint is not stored yet, a placeholder under its key (`{"has_writes": true}`).
A process that dies before `put` leaves those three keys; no index query finds the
placeholder (it names no thread).
"""

from __future__ import annotations

import time

import redis
from helpers import checkpoint_ids, config_of, lgprune, put_checkpoints, snapshot, uuid6_at
from langgraph.checkpoint.redis import RedisSaver

from lgprune import Pruner
from lgprune.langgraph import PruningRedisSaver

HOUR_MS = 3_600_000


def put_placeholder(saver: RedisSaver, thread_id: str, *, age_ms: float, ns: str = "") -> list[bytes]:
    """What a process that died between put_writes and put leaves: the placeholder, the
    writes and the registry of a checkpoint `age_ms` old (by its id)."""
    checkpoint_id = uuid6_at(time.time() * 1000 - age_ms)
    config = config_of(thread_id, checkpoint_id, ns)
    saver.put_writes(config, [("step", 1), ("other", 2)], task_id="task-lost")
    stem = f"{thread_id}:{ns or '__empty__'}:{checkpoint_id}"
    keys = [f"checkpoint:{stem}".encode(), f"write_keys_zset:{stem}".encode()]
    keys += [f"checkpoint_write:{stem}:task-lost:{i}".encode() for i in range(2)]
    assert saver._redis.json().get(keys[0]) == {"has_writes": True}
    return keys


def existing(r: redis.Redis, keys: list[bytes]) -> list[bytes]:
    return [k for k in keys if r.exists(k)]


def test_an_orphan_sweep_removes_a_placeholder_older_than_grace_with_its_writes_and_registry(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    put_checkpoints(saver, "t", 3)
    old = put_placeholder(saver, "t", age_ms=HOUR_MS)
    lone = put_placeholder(saver, "lone", age_ms=HOUR_MS)  # a thread with nothing else
    young = put_placeholder(saver, "t", age_ms=0)
    before = snapshot(r)
    result = pruner.sweep(5, orphans=True)
    assert existing(r, old + lone) == []
    assert result.orphans_deleted == len(old + lone)
    after = snapshot(r)
    assert after == {k: v for k, v in before.items() if k not in old + lone}
    assert existing(r, young) == young


def test_keep_0_and_delete_thread_remove_placeholders_whatever_their_age(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 4)
    left = put_placeholder(saver, "t", age_ms=0) + put_placeholder(saver, "t", age_ms=HOUR_MS, ns="child:x")
    only = put_placeholder(saver, "only-a-placeholder", age_ms=0)
    put_checkpoints(saver, "T", 3)
    other = put_placeholder(saver, "T", age_ms=0)  # a case variant: never ours
    before = snapshot(r)
    result = Pruner(r).prune("t", 0)
    assert existing(r, left) == [] and checkpoint_ids(saver, "t") == []
    assert result.keys_deleted == 4 * 4 + 1 + len(left)  # checkpoints, writes, registries, pointer
    Pruner(r).prune("only-a-placeholder", 0)
    assert existing(r, only) == []
    gone = {k for k in before if k.split(b":")[1] in (b"t", b"only-a-placeholder")}
    assert snapshot(r) == {k: v for k, v in before.items() if k not in gone}
    assert existing(r, other) == other
    PruningRedisSaver(redis_client=r).delete_thread("T")
    assert existing(r, other) == [] and checkpoint_ids(saver, "T") == []


def test_a_keep_n_prune_never_counts_a_placeholder_and_keeps_a_young_one(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    ids = put_checkpoints(saver, "t", 8)
    young = put_placeholder(saver, "t", age_ms=0)
    result = pruner.prune("t", 5)
    assert checkpoint_ids(saver, "t") == sorted(
        [*ids[-5:], young[0].decode().rsplit(":", 1)[1]], reverse=True
    )
    assert result.checkpoints_kept == 5 and result.checkpoints_deleted == 3
    assert existing(r, young) == young


def test_the_command_line_removes_crash_leftovers(r: redis.Redis, saver: RedisSaver, redis_url: str) -> None:
    old = put_placeholder(saver, "a", age_ms=HOUR_MS)
    assert lgprune("sweep", "--keep", "5", "--orphans", "--url", redis_url).returncode == 0
    assert existing(r, old) == []
    fresh = put_placeholder(saver, "b", age_ms=0)
    assert lgprune("prune", "b", "--keep", "0", "--url", redis_url).returncode == 0
    assert existing(r, fresh) == []


def test_a_sweep_counts_each_thread_once(r: redis.Redis, saver: RedisSaver) -> None:
    threads = [f"t{i}" for i in range(30)]
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 8, writes=1)
    result = Pruner(r, budget=40).sweep(2)  # calls stop inside threads, which the next call visits again
    assert result.calls > 3
    assert result.threads_visited == len(threads)
    assert all(len(checkpoint_ids(saver, t)) == 2 for t in threads)


def test_grace_0_removes_orphans_of_any_age(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    young = put_placeholder(saver, "t", age_ms=0)
    time.sleep(0.01)  # older than "now" by the server's clock
    assert pruner.sweep(5, orphans=True, grace=0).orphans_deleted == len(young)
    assert existing(r, young) == []


def test_keep_0_never_says_done_while_a_case_variant_hides_leftovers(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    put_checkpoints(saver, "T", 60, writes=3)  # 180 writes the tag of "t" also matches
    put_checkpoints(saver, "t", 2, writes=1)
    left = put_placeholder(saver, "t", age_ms=0)
    pruner.install()
    reply = r.fcall("lgprune_thread", 0, "t", "0", "BUDGET", "100")  # reads 100 writes
    assert dict(zip(reply[::2], reply[1::2], strict=True))[b"more"] == 1 or existing(r, left) == []
    Pruner(r, budget=1000).prune("t", 0)
    assert existing(r, left) == [] and checkpoint_ids(saver, "t") == []
