"""Sweeps over every thread, prune_many, retention policies and orphans, against real Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from helpers import (
    checkpoint_ids,
    delta_graph,
    delta_turns,
    every_write_has_its_checkpoint,
    needs_delta_saver,
    put_checkpoints,
    snapshot,
    states_by_checkpoint,
)
from langgraph.checkpoint.redis import RedisSaver

from lgprune import Pruner, SweepResult
from lgprune.facts import WATERMARKS

ODD = ["Wang1", "wang1", "wang1:2025", "a b|c", ""]


@pytest.fixture
def threads(saver: RedisSaver) -> list[str]:
    ids = [f"user:{i}" for i in range(120)] + ODD
    for thread_id in ids:
        put_checkpoints(saver, thread_id, 15, writes=2)
    return ids


def test_sweep_leaves_exactly_keep_of_every_thread(
    r: redis.Redis, saver: RedisSaver, threads: list[str]
) -> None:
    progress: list[SweepResult] = []
    result = Pruner(r).sweep(5, on_progress=progress.append)
    assert all(len(checkpoint_ids(saver, t)) == 5 for t in threads)
    assert every_write_has_its_checkpoint(r)
    assert len(list(r.scan_iter(match="checkpoint_write:*"))) == 2 * 5 * len(threads)
    assert result.checkpoints_deleted == 10 * len(threads) and result.threads_pruned == len(threads)
    assert result.calls > 1 and [p.calls for p in progress] == list(range(1, result.calls + 1))
    again = Pruner(r).sweep(5)
    assert (again.keys_deleted, again.threads_visited) == (0, len(threads))


def test_a_sweep_stopped_inside_its_first_thread_is_not_reported_done(
    r: redis.Redis, saver: RedisSaver
) -> None:
    # one thread in the pass's first segment, and a budget of 10 stops that call inside
    # the thread, before it is done
    put_checkpoints(saver, "t", 12, writes=0)
    result = Pruner(r, budget=10).sweep(2)
    assert result.calls > 1
    assert len(checkpoint_ids(saver, "t")) == 2


def test_sweep_dry_run_counts_and_deletes_nothing(r: redis.Redis, threads: list[str]) -> None:
    before = snapshot(r)
    planned = Pruner(r).sweep(5, dry_run=True)
    assert snapshot(r) == before
    done = Pruner(r).sweep(5)
    assert (planned.checkpoints_deleted, planned.writes_deleted) == (
        done.checkpoints_deleted,
        done.writes_deleted,
    )


def test_a_sweep_stopped_after_any_call_and_started_again_finishes(
    r: redis.Redis, saver: RedisSaver, threads: list[str]
) -> None:
    Pruner(r).install()
    for stop_after in (1, 3, 6):
        cursor, calls = "0", 0
        while calls < stop_after:  # a client that dies after `stop_after` calls
            reply = r.fcall("lgprune_sweep", 0, cursor, 5, "BUDGET", 300)
            cursor = reply[1].decode()
            calls += 1
            assert every_write_has_its_checkpoint(r)  # every call leaves the data whole
            if cursor == "0":
                break
    Pruner(r, budget=300).sweep(5)  # started again from the beginning
    assert all(len(checkpoint_ids(saver, t)) == 5 for t in threads)
    assert every_write_has_its_checkpoint(r)


@needs_delta_saver
def test_sweep_keeps_delta_history(r: redis.Redis, saver: RedisSaver) -> None:
    app = delta_graph(saver)
    for t in ("d1", "d2"):
        delta_turns(app, t, turns=6)
    kept = {t: checkpoint_ids(saver, t)[:2] for t in ("d1", "d2")}
    states = {t: states_by_checkpoint(app, t, kept[t]) for t in kept}
    result = Pruner(r).sweep(2)
    assert result.checkpoints_deleted > 0
    assert {t: states_by_checkpoint(app, t, kept[t]) for t in kept} == states


def test_prune_many(r: redis.Redis, saver: RedisSaver) -> None:
    for t in ("a", "b", "c", "C"):
        put_checkpoints(saver, t, 10)
    untouched = snapshot(r, skip_thread="zzz")
    result = Pruner(r).prune_many(["a", "b", "c"], 4)
    assert (result.checkpoints_deleted, result.checkpoints_kept, result.calls) == (18, 12, 1)
    assert [len(checkpoint_ids(saver, t)) for t in ("a", "b", "c", "C")] == [4, 4, 4, 10]
    assert untouched != snapshot(r)
    small = Pruner(r, budget=10).prune_many(["C", "a"], 2)  # many calls, resumed where each stopped
    assert small.calls > 2 and [len(checkpoint_ids(saver, t)) for t in ("C", "a")] == [2, 2]


def test_idle_ttl_deletes_exactly_the_idle_threads(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "old", 6, age=40 * 86400)
    put_checkpoints(saver, "old", 3, ns="tools:1", age=40 * 86400)
    put_checkpoints(saver, "recent", 6, age=2 * 86400)
    put_checkpoints(saver, "OLD", 6)  # a case variant that is active
    put_checkpoints(saver, "quiet", 2, age=40 * 86400)  # idle, and within keep: a count alone cannot tell
    result = Pruner(r).sweep(10, idle_ttl=timedelta(days=30))
    assert result.threads_deleted == 2
    assert not [k for k in r.scan_iter() if b":old:" in k or k.endswith(b":old") or b"quiet" in k]
    assert [len(checkpoint_ids(saver, t)) for t in ("recent", "OLD")] == [6, 6]


def test_max_age_never_leaves_fewer_than_keep(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "ancient", 9, age=30 * 86400)  # all older than max_age
    old = put_checkpoints(saver, "mixed", 6, age=10 * 86400)
    new = put_checkpoints(saver, "mixed", 6, age=3600)
    Pruner(r).sweep(3, max_age=timedelta(days=7))
    assert len(checkpoint_ids(saver, "ancient")) == 3  # the floor of keep
    assert checkpoint_ids(saver, "mixed") == sorted(new, reverse=True)  # younger than 7 days: all kept
    assert not set(old) & set(checkpoint_ids(saver, "mixed"))


def test_orphans_are_found_and_removed(r: redis.Redis, saver: RedisSaver) -> None:
    ids = put_checkpoints(saver, "t:1", 6, age=3600)
    young = put_checkpoints(saver, "young", 2)
    # an interrupted client-side prune: checkpoint documents gone, the rest left
    for cid in ids[:3]:
        r.delete(f"checkpoint:t:1:__empty__:{cid}")
    r.delete(f"checkpoint:young:__empty__:{young[0]}")  # too young to judge
    fresh = put_checkpoints(saver, "fresh", 1, writes=0)
    r.delete(f"checkpoint:fresh:__empty__:{fresh[0]}")  # a dangling latest pointer, too young to judge
    gone = put_checkpoints(saver, "gone", 2, age=3600)
    for cid in gone:
        r.delete(f"checkpoint:gone:__empty__:{cid}")  # leaves a dangling latest pointer
    custom = RedisSaver(redis_client=r, checkpoint_prefix="other", checkpoint_write_prefix="other_w")
    custom.setup()
    put_checkpoints(custom, "t:1", 3, age=3600)  # its registries share write_keys_zset: not orphans
    # a write naming a gone checkpoint, stored where the saver would not store it: not ours to judge
    alien = "checkpoint_write:elsewhere"
    r.json().set(alien, "$", {"thread_id": "t:1", "checkpoint_ns": "__empty__", "checkpoint_id": ids[0]})

    result = Pruner(r).sweep(10, orphans=True)

    assert result.orphans_deleted == 3 * 2 + 3 + 2 * 2 + 2 + 1
    assert every_write_has_its_checkpoint(r) is False  # only the young orphan is left
    assert r.exists(f"checkpoint_write:young:__empty__:{young[0]}:task-0:0")
    assert not r.exists("checkpoint_latest:gone:__empty__")
    assert r.exists("checkpoint_latest:fresh:__empty__")
    assert len(list(r.scan_iter(match="write_keys_zset:t:1:*"))) == 3 + 3  # ours, and the other prefix's
    assert len(list(r.scan_iter(match="other_w:*"))) == 6
    assert len(checkpoint_ids(saver, "t:1")) == 3
    assert r.exists(alien)


def test_threads_the_index_cannot_match_are_named_and_left(r: redis.Redis, saver: RedisSaver) -> None:
    long_id = "L" * 5000  # RediSearch matches no TAG value over 4,096 bytes
    for thread_id in ("   ", long_id, "fine"):
        put_checkpoints(saver, thread_id, 8, writes=1)
    result = Pruner(r).sweep(2)
    assert (result.threads_failed, result.threads_pruned, result.threads_skipped) == (2, 1, 0)
    assert sorted(f.thread_id for f in result.failed) == ["   ", long_id]
    assert all(f.reason.startswith("BADDATA ") and "by hand" in f.reason for f in result.failed)
    assert len(checkpoint_ids(saver, "   ")) == 8 and len(checkpoint_ids(saver, "fine")) == 2
    assert r.json().get(f"checkpoint:{long_id}:__empty__:{checkpoint_ids(saver, long_id)[0]}") is not None


def test_stats_sizes_threads_whatever_their_ids(r: redis.Redis, saver: RedisSaver) -> None:
    for n, thread_id in enumerate(("\\:", "x,\\$y", "a\\{b}", "plain")):
        put_checkpoints(saver, thread_id, 5 + n)
    stats = Pruner(r).stats(2, top=4)
    assert [(t.thread_id, t.checkpoints) for t in stats.top] == [
        ("plain", 8),
        ("a\\{b}", 7),
        ("x,\\$y", 6),
        ("\\:", 5),
    ]
    assert all(t.bytes > 0 for t in stats.top)
    assert stats.sweep_checkpoints == 3 + 4 + 5 + 6


def test_stats_counts_and_sizes_each_threads_own_checkpoints(r: redis.Redis, saver: RedisSaver) -> None:
    """After pruning wang1, Wang1, a, a,b to 3 each, each holds 3, not its variants' 6."""
    for thread_id in ("wang1", "Wang1", "a", "a,b"):
        put_checkpoints(saver, thread_id, 7, writes=2)
        Pruner(r).prune(thread_id, 3)
    put_checkpoints(saver, "wang1:2025", 40, writes=2)  # a colon sibling under wang1's key prefix
    stats = Pruner(r).stats(10, top=5)
    by_thread = {t.thread_id: t for t in stats.top}
    assert {t: by_thread[t].checkpoints for t in ("wang1", "Wang1", "a", "a,b")} == dict.fromkeys(
        ("wang1", "Wang1", "a", "a,b"), 3
    )
    assert stats.histogram == {"2-5": 4, "11-50": 1}
    assert all(t.exact for t in stats.top) and stats.notes == []
    per_checkpoint = {t: by_thread[t].bytes / by_thread[t].checkpoints for t in by_thread}
    small = [per_checkpoint[t] for t in ("wang1", "Wang1", "a", "a,b")]
    assert min(small) > 0 and max(small) < 1.5 * min(small)  # sampled from the thread's own keys
    assert stats.sweep_checkpoints == 30


def test_a_sweep_counts_threads_deleted_whole_and_threads_with_subgraphs_once(
    r: redis.Redis, saver: RedisSaver
) -> None:
    threads = [f"t{i}" for i in range(30)]
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 4, writes=1)
        put_checkpoints(saver, thread_id, 2, writes=1, ns=f"child:{thread_id}")
    assert Pruner(r, budget=40).sweep(1).threads_visited == len(threads)  # calls stop inside steps
    assert Pruner(r, budget=40).sweep(0).threads_visited == len(threads)  # each deleted whole
    assert r.keys() == [WATERMARKS.encode()]  # only lgprune's own key is left


def test_a_dry_run_of_many_threads_ends_and_deletes_nothing(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "a", 5, writes=1)
    put_checkpoints(saver, "big", 100, writes=3)  # more writes than one call of budget 100 reads
    put_checkpoints(saver, "c", 5, writes=1)
    before = snapshot(r)
    dry = Pruner(r, budget=100).prune_many(["a", "big", "c"], 0, dry_run=True)
    assert snapshot(r) == before
    assert dry.checkpoints_deleted > 5 + 5  # a and c, and a part of big, each counted once
    assert dry.checkpoints_deleted <= 5 + 100 + 5


def test_a_thread_pruned_over_several_calls_counts_as_one_visit(r: redis.Redis, saver: RedisSaver) -> None:
    for i in range(5):
        put_checkpoints(saver, f"long{i}", 30, writes=1)  # 84 keys go: more than one call of 40 deletes
    result = Pruner(r, budget=40).sweep(2)
    assert result.calls > 5 and result.threads_visited == 5 and result.threads_pruned >= 5
    assert all(len(checkpoint_ids(saver, f"long{i}")) == 2 for i in range(5))
