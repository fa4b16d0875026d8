"""Servers that cap search results: redis-stack-server starts RediSearch with
MAXSEARCHRESULTS 10000, below what lgprune asks for when BUDGET or KEEP is large.
Here the cap is set to 100 at run time, so a thread larger than it stays small."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from helpers import checkpoint_ids, every_write_has_its_checkpoint, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver

from lgprune import Pruner

CAP = 100


@contextmanager
def result_cap(r: redis.Redis, cap: int) -> Iterator[None]:
    """MAXSEARCHRESULTS set to `cap` for the block, then set back."""
    before = r.execute_command("FT.CONFIG", "GET", "MAXSEARCHRESULTS")
    value = before[b"MAXSEARCHRESULTS"] if isinstance(before, dict) else before[0][1]
    r.execute_command("FT.CONFIG", "SET", "MAXSEARCHRESULTS", str(cap))
    try:
        yield
    finally:
        r.execute_command("FT.CONFIG", "SET", "MAXSEARCHRESULTS", "-1" if value == b"unlimited" else value)


def test_a_thread_larger_than_the_cap_is_pruned_with_a_large_budget(
    r: redis.Redis, saver: RedisSaver
) -> None:
    ids = put_checkpoints(saver, "big", 3 * CAP // 2, writes=2)
    put_checkpoints(saver, "other", 20, writes=2)
    others = snapshot(r, skip_thread="big")
    with result_cap(r, CAP):
        result = Pruner(r, budget=10_000).prune("big", 10)  # would list 10,010 and read 20,000 writes
    assert checkpoint_ids(saver, "big") == ids[::-1][:10]
    assert result.checkpoints_deleted == len(ids) - 10
    assert every_write_has_its_checkpoint(r)
    assert len(list(r.scan_iter(match="checkpoint_write:big:*"))) == 2 * 10
    assert snapshot(r, skip_thread="big") == others


def test_a_sweep_with_a_large_budget_prunes_every_thread_under_the_cap(
    r: redis.Redis, saver: RedisSaver
) -> None:
    threads = [f"user:{i}" for i in range(4)]
    for thread_id in threads:
        put_checkpoints(saver, thread_id, CAP + 20, writes=1)
    with result_cap(r, CAP):
        Pruner(r, budget=50_000).sweep(5)
    assert {t: len(checkpoint_ids(saver, t)) for t in threads} == dict.fromkeys(threads, 5)
    assert every_write_has_its_checkpoint(r)


def test_a_keep_beyond_the_cap_never_deletes_the_newest_keep(r: redis.Redis, saver: RedisSaver) -> None:
    ids = put_checkpoints(saver, "big", 2 * CAP, writes=1)
    newest = ids[::-1][: CAP + 20]
    with result_cap(r, CAP):
        Pruner(r, budget=10_000).prune("big", CAP + 20)  # sees at most CAP entries per query
    left = checkpoint_ids(saver, "big")
    assert set(newest) <= set(left)
    assert every_write_has_its_checkpoint(r)
    assert len(list(r.scan_iter(match="checkpoint_write:big:*"))) == len(left)


def test_a_cap_lowered_after_the_library_learnt_it_is_learnt_again(r: redis.Redis, saver: RedisSaver) -> None:
    """The library learns the cap once per load: a cap lowered since then fails the call's
    first search, and the call runs again from scratch under the new cap."""
    ids = put_checkpoints(saver, "big", 3 * CAP // 2, writes=1)
    pruner = Pruner(r, budget=10_000)
    assert pruner.prune("big", len(ids)).keys_deleted == 0  # the library learns the cap as it is
    with result_cap(r, CAP):
        result = pruner.prune("big", 10)  # its first search asks for 10,010 entries
    assert checkpoint_ids(saver, "big") == ids[::-1][:10]
    assert result.checkpoints_deleted == len(ids) - 10
    assert every_write_has_its_checkpoint(r)


def test_a_checkpoint_whose_writes_a_capped_answer_cuts_short_waits_for_all_of_them(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 1, writes=100)  # the oldest, with more writes than one answer holds
    put_checkpoints(saver, "t", 3, writes=1)
    with result_cap(r, 30):
        result = Pruner(r, budget=200).prune("t", 2)
    assert result.calls > 1 and len(checkpoint_ids(saver, "t")) == 2
    assert every_write_has_its_checkpoint(r)
