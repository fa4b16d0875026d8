"""The rules where two parts of the engine meet: a thread found whatever its pointer, the
pointer's checkpoint kept with its history, every key charged to the budget, one bad
thread never stopping a sweep, rights never read as absence, cursors checked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import langgraph.checkpoint.base.id as lg_id
import pytest
import redis
from helpers import (
    checkpoint_ids,
    config_of,
    delta_graph,
    delta_turns,
    needs_delta_saver,
    put_checkpoints,
    put_unreadable_thread,
    snapshot,
    uuid6_at,
)
from langgraph.checkpoint.redis import RedisSaver
from test_acl import user_client

from lgprune import Pruner
from lgprune.errors import BadDataError, NoPermissionError
from lgprune.facts import WATERMARKS


def pairs(reply: Any) -> dict[str, Any]:
    return {k.decode(): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


def thread_keys(r: redis.Redis, thread_id: str) -> set[bytes]:
    return {
        k
        for k in r.scan_iter(count=1000)
        if f":{thread_id}:".encode() in k or k.endswith(f":{thread_id}".encode())
    }


def uuid6_ns(checkpoint_id: str) -> int:
    """The time in a uuid6 checkpoint id, in ns since the epoch."""
    high, mid, rest = checkpoint_id.split("-")[:3]
    ticks = (int(high, 16) << 28) | (int(mid, 16) << 12) | int(rest[1:], 16)
    return (ticks - 0x01B21DD213814000) * 100


def big_thread_with_a_busy_newest(r: redis.Redis, saver: RedisSaver, thread_id: str) -> None:
    """300 root checkpoints without writes, stamped an hour apart, then one with 20 writes:
    the root window of a call is narrow, and its estimate of what a checkpoint costs (by the
    oldest) lets it take every one it lists, the newest too."""
    ids = put_checkpoints(saver, thread_id, 300, writes=0)
    now_ms = time.time() * 1000
    for i, checkpoint_id in enumerate(ids):
        key = f"checkpoint:{thread_id}:__empty__:{checkpoint_id}"
        r.json().set(key, "$.checkpoint_ts", now_ms - (300 - i) * 3_600_000)
    put_checkpoints(saver, thread_id, 1, writes=20)


def test_a_latest_pointer_stays_while_its_namespace_keeps_any_checkpoint(
    r: redis.Redis, saver: RedisSaver
) -> None:
    big_thread_with_a_busy_newest(r, saver, "t")
    Pruner(r).install()
    first = pairs(r.fcall("lgprune_thread", 0, "t", "0", "BUDGET", "200"))
    assert first["more"] == 1 and first["checkpoints_deleted"] > 0
    assert checkpoint_ids(saver, "t") and r.exists("checkpoint_latest:t:__empty__")
    assert Pruner(r, budget=200).prune("t", 0).checkpoints_kept == 0
    assert not thread_keys(r, "t")


def test_a_sweep_finds_a_thread_by_its_checkpoints_not_by_its_pointer(
    r: redis.Redis, saver: RedisSaver
) -> None:
    big_thread_with_a_busy_newest(r, saver, "t")
    for i in range(5):
        put_checkpoints(saver, f"other{i}", 4, writes=1)
    r.delete("checkpoint_latest:t:__empty__")  # a thread stranded without its pointer
    result = Pruner(r, budget=200).sweep(0, full=True)
    assert result.cursor == "0" and not result.unfinished
    assert not thread_keys(r, "t")
    assert not r.keys("checkpoint:other*")


def test_a_call_deletes_no_more_keys_than_its_budget_pointer_included(
    r: redis.Redis, saver: RedisSaver
) -> None:
    Pruner(r).install()
    for n, writes in ((2, 3), (3, 1), (4, 2), (5, 1)):  # (2, 3): 5 keys, then 5 and the pointer
        put_checkpoints(saver, f"t{n}", n, writes=writes)
        while True:
            reply = pairs(r.fcall("lgprune_thread", 0, f"t{n}", "0", "BUDGET", "10"))
            assert reply["keys_deleted"] <= 10
            if not reply["more"]:
                break
        assert not thread_keys(r, f"t{n}")


def test_prune_many_counts_every_kept_checkpoint_when_it_resumes_inside_a_thread(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "a", 4, writes=1)
    put_checkpoints(saver, "b", 60, writes=1)
    put_checkpoints(saver, "c", 4, writes=1)
    result = Pruner(r, budget=30).prune_many(["a", "b", "c"], 2)
    assert result.calls > 1
    kept = sum(len(checkpoint_ids(saver, t)) for t in "abc")
    assert kept == 6 and result.checkpoints_kept == kept


@needs_delta_saver
@pytest.mark.parametrize(
    ("behind_of", "budget"),
    [
        pytest.param(2, 2000, id="listed-whole"),
        # a thread larger than a call's listing: the fork is older than the newest it
        # lists by id and stored after the first it lists in index order
        pytest.param(15, 10, id="listed-in-part"),
    ],
)
def test_the_checkpoint_the_pointer_spares_keeps_its_delta_history(
    r: redis.Redis, saver: RedisSaver, monkeypatch: pytest.MonkeyPatch, behind_of: int, budget: int
) -> None:
    app = delta_graph(saver)
    delta_turns(app, "fork", turns=12)
    main = checkpoint_ids(saver, "fork")  # newest first
    # a fork stored last by a writer whose clock is behind: its ids fall between the
    # main line's (behind_of + 1)-th and behind_of-th newest, and the latest pointer names its newest
    behind = (uuid6_ns(main[behind_of]) + uuid6_ns(main[behind_of - 1])) // 2
    monkeypatch.setattr(lg_id, "time", SimpleNamespace(time_ns=lambda: behind))
    monkeypatch.setattr(lg_id, "_last_v6_timestamp", None)
    app.invoke({"msgs": ["fork"]}, config_of("fork", main[-6]), durability="sync")
    monkeypatch.undo()
    fork = sorted(set(checkpoint_ids(saver, "fork")) - set(main))
    assert fork and all(main[behind_of] < f < main[behind_of - 1] for f in fork)
    assert r.get("checkpoint_latest:fork:__empty__") == f"checkpoint:fork:__empty__:{fork[-1]}".encode()
    state = app.get_state(config_of("fork")).values
    assert len(state["msgs"]) >= 4
    if budget < 2000:  # one stamp for all, put oldest first: no window proves the newest
        stamp = time.time() * 1000
        for checkpoint_id in [*reversed(main), *fork]:
            r.json().set(f"checkpoint:fork:__empty__:{checkpoint_id}", "$.checkpoint_ts", stamp)

    result = Pruner(r, budget=budget).prune("fork", 2)

    assert fork[-1] in checkpoint_ids(saver, "fork") and result.delta_ancestors_kept > 0
    assert app.get_state(config_of("fork")).values == state


@pytest.mark.parametrize("pointer", [True, False], ids=["window", "no-pointer"])
def test_max_age_reaches_the_oldest_roots_of_a_large_thread_whose_tag_lists_subgraphs_first(
    r: redis.Redis, saver: RedisSaver, pointer: bool
) -> None:
    # a subgraph run stored first, its ids 10 minutes ahead: young, so max_age keeps it all,
    # and first in the answer of the query on the thread's tag
    ahead = (time.time() + 600) * 1000
    run = put_checkpoints(
        saver, "t", 30, writes=1, ns="sub", ids_given=[uuid6_at(ahead, i) for i in range(30)]
    )
    put_checkpoints(saver, "t", 16, writes=1, age=7200)  # two hours old: they go
    fresh = put_checkpoints(saver, "t", 20, writes=1)
    if not pointer:  # as in a LangGraph.js store: the root is listed without a window
        r.delete("checkpoint_latest:t:__empty__")
    Pruner(r).install()
    for _ in range(40):
        reply = pairs(r.fcall("lgprune_thread", 0, "t", "2", "BUDGET", "12", "MAX_AGE", "3600000"))
        if not reply["more"]:
            break
    assert checkpoint_ids(saver, "t") == sorted(fresh, reverse=True)
    assert checkpoint_ids(saver, "t", "sub") == sorted(run, reverse=True)


def test_a_large_thread_whose_window_and_first_page_hold_only_a_case_variant_is_pruned(
    r: redis.Redis, saver: RedisSaver
) -> None:
    # Wang1 stored first, stamped after all of wang1: the root page (the first stored) and the
    # window back from wang1's newest both hold Wang1's entries; only a sorted listing reaches
    # wang1's own (its ids are the newer)
    put_checkpoints(saver, "Wang1", 30, writes=1, age=3600)
    own = put_checkpoints(saver, "wang1", 20, writes=1)
    old_ms = time.time() * 1000 - 7_200_000
    for i, checkpoint_id in enumerate(own):  # (re-indexed: wang1's entries now come last)
        r.json().set(f"checkpoint:wang1:__empty__:{checkpoint_id}", "$.checkpoint_ts", old_ms + i)
    Pruner(r).install()
    for _ in range(40):
        reply = pairs(r.fcall("lgprune_thread", 0, "wang1", "2", "BUDGET", "10"))
        if not reply["more"]:
            break
    assert checkpoint_ids(saver, "wang1") == sorted(own, reverse=True)[:2]
    assert len(checkpoint_ids(saver, "Wang1")) == 30


def test_idle_ttl_never_judges_a_large_active_thread_by_an_old_checkpoint_put_last(
    r: redis.Redis, saver: RedisSaver
) -> None:
    now_ms = time.time() * 1000
    old = put_checkpoints(saver, "t", 20, writes=0, age=2400)  # 40 minutes old, by id and stamp
    for i, checkpoint_id in enumerate(old):
        r.json().set(f"checkpoint:t:__empty__:{checkpoint_id}", "$.checkpoint_ts", now_ms - 2_400_000 + i)
    put_checkpoints(saver, "t", 5, writes=0)  # active: 5 from now
    late = put_checkpoints(saver, "t", 1, writes=0, age=2460)[0]  # put last with a 41-minute-old id
    r.json().set(f"checkpoint:t:__empty__:{late}", "$.checkpoint_ts", now_ms - 2_460_000)
    Pruner(r).install()
    while True:
        reply = pairs(r.fcall("lgprune_thread", 0, "t", "1", "IDLE_TTL", "1800000", "BUDGET", "10"))
        if not reply["more"]:
            break
    assert late in checkpoint_ids(saver, "t") and saver.get_tuple(config_of("t")) is not None
    assert len(checkpoint_ids(saver, "t")) == 2  # the newest, and the pointer's


def test_an_orphan_sweep_deletes_no_more_keys_a_call_than_its_budget(
    r: redis.Redis, saver: RedisSaver
) -> None:
    gone = time.time() * 1000 - 3_600_000
    for i in range(15):  # 15 crash leftovers: a placeholder, 2 writes and a registry each
        saver.put_writes(config_of(f"lost{i}", uuid6_at(gone)), [("a", 1), ("b", 2)], task_id="t")
    Pruner(r).install()
    cursor, deleted = "0", 0
    while True:
        reply = pairs(r.fcall("lgprune_sweep", 0, cursor, "1", "ORPHANS", "BUDGET", "10"))
        assert reply["keys_deleted"] <= 10
        deleted += reply["keys_deleted"]
        cursor = reply["cursor"].decode()
        if cursor == "0":
            break
    assert deleted == 60 and not r.keys("*lost*")


def test_a_subgraph_run_of_the_checkpoint_the_pointer_spares_stays(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 6, writes=1)
    late = put_checkpoints(saver, "t", 1, writes=1, age=3600)[0]  # put last, an hour-old id: the pointer's
    run = put_checkpoints(saver, "t", 2, writes=1, ns="child:1", age=3500)  # a subgraph run of its time
    Pruner(r).prune("t", 2)
    assert late in checkpoint_ids(saver, "t")
    assert checkpoint_ids(saver, "t", "child:1") == sorted(run, reverse=True)


def test_an_incremental_pass_sees_a_write_that_landed_after_it_visited_the_thread(
    r: redis.Redis, saver: RedisSaver
) -> None:
    threads = [f"t{i:02d}" for i in range(30)]
    for t in threads:
        put_checkpoints(saver, t, 3, writes=1)
    Pruner(r).sweep(2, margin=0)  # a full pass: the watermark
    for t in threads:
        put_checkpoints(saver, t, 1, writes=1)
    first = pairs(r.fcall("lgprune_sweep", 0, "0", "2", "BUDGET", "100", "MARGIN", "0"))
    assert first["kind"] == b"incremental" and first["cursor"] != b"0"
    visited = [t for t in threads if len(checkpoint_ids(saver, t)) == 2]
    assert visited  # the pass visited some threads in its first call ...
    put_checkpoints(saver, visited[0], 2, writes=1)  # ... and one of them gets new checkpoints
    time.sleep(0.05)
    cursor = first["cursor"]
    while cursor != b"0":
        cursor = pairs(r.fcall("lgprune_sweep", 0, cursor, "2", "BUDGET", "100", "MARGIN", "0"))["cursor"]
    assert len(checkpoint_ids(saver, visited[0])) == 4
    again = Pruner(r).sweep(2, margin=0)
    assert again.kind == "incremental"
    assert len(checkpoint_ids(saver, visited[0])) == 2


def test_a_thread_id_holding_a_nul_byte_stops_no_one(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "a\x00evil", 2, writes=1, ns="child:1")
    for t in ("a", "A", "a,b", *(f"n{i}" for i in range(10))):
        put_checkpoints(saver, t, 4, writes=1)
    Pruner(r).prune("a", 1)
    assert len(checkpoint_ids(saver, "a")) == 1
    result = Pruner(r).sweep(1)
    assert result.threads_failed == 0 and not result.unfinished
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in ("A", "a,b", *(f"n{i}" for i in range(10))))
    assert Pruner(r).stats(1).threads > 0


def test_one_thread_that_cannot_be_pruned_never_stops_a_sweep(r: redis.Redis, saver: RedisSaver) -> None:
    put_unreadable_thread(r, saver, "bad")
    bad = snapshot(r)
    bad = {k: v for k, v in bad.items() if b":bad:" in k}
    others = [f"t{i:02d}" for i in range(20)]
    for t in others:
        put_checkpoints(saver, t, 4, writes=1)
    for pruner in (Pruner(r), Pruner(r, budget=40)):
        result = pruner.sweep(1, full=True)
        assert result.threads_failed >= 1 and not result.unfinished
        assert {f.thread_id for f in result.failed} == {"bad"}
        assert result.failed[0].reason.startswith("BADDATA")
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in others)
    assert {k: v for k, v in snapshot(r).items() if b":bad:" in k} == bad
    with pytest.raises(BadDataError, match="WRONGTYPE"):
        Pruner(r).prune("bad", 1)  # one thread's call: the error is its reply, LGPRUNE BADDATA
    assert any("'bad' could not be read" in note for note in Pruner(r).stats(1).notes)


@pytest.fixture
def reader_without(r: redis.Redis, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The README's pruning user, less the command the test is parametrized with."""
    client = user_client(r, "lgprune")
    r.execute_command("ACL", "SETUSER", "lgprune", f"-{request.param}")
    yield client
    client.close()
    r.execute_command("ACL", "DELUSER", "lgprune")


@pytest.mark.parametrize("reader_without", ["get"], indirect=True)
def test_a_user_who_may_not_read_the_pointer_deletes_nothing(
    r: redis.Redis, saver: RedisSaver, reader_without: redis.Redis
) -> None:
    put_checkpoints(saver, "skew", 6, writes=1)
    put_checkpoints(saver, "skew", 1, writes=1, age=3600)  # put last, with an hour-old id
    Pruner(r).install()
    before = snapshot(r)
    with pytest.raises(NoPermissionError, match="may not"):
        Pruner(reader_without).prune("skew", 2)
    assert snapshot(r) == before


@pytest.mark.parametrize("reader_without", ["json.get"], indirect=True)
def test_a_user_who_may_not_read_the_pointers_checkpoint_deletes_nothing(
    r: redis.Redis, saver: RedisSaver, reader_without: redis.Redis
) -> None:
    # larger than a call of budget 10 lists: the root window, anchored at the checkpoint_ts of the
    # checkpoint the pointer names, is the first read of a document; a refused read is no
    # "no window" (a plan made without a read the ACL refused): the call fails, deleting nothing
    put_checkpoints(saver, "big", 30, writes=1)
    Pruner(r).install()
    before = snapshot(r)
    with pytest.raises(NoPermissionError, match="may not"):
        Pruner(reader_without, budget=10).prune("big", 2)
    assert snapshot(r) == before


def test_every_error_of_a_call_is_an_lgprune_code_and_deletes_nothing(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 4, writes=1)
    r.delete(WATERMARKS)
    r.set(WATERMARKS, "not a hash")
    Pruner(r).install()
    before = snapshot(r)
    with pytest.raises(redis.ResponseError, match=r"^LGPRUNE BADDATA .*WRONGTYPE"):
        r.fcall("lgprune_sweep", 0, "0", "1")
    assert snapshot(r) == before


def test_dry_runs_run_read_only_and_the_flags_say_where_each_function_may_run(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 6, writes=1)
    Pruner(r).install()
    before = snapshot(r)
    thread = pairs(r.execute_command("FCALL_RO", "lgprune_thread_ro", 0, "t", "2"))
    assert thread["checkpoints_deleted"] == 4 and thread["checkpoints_kept"] == 2
    sweep = pairs(r.execute_command("FCALL_RO", "lgprune_sweep_ro", 0, "0", "2"))
    assert sweep["checkpoints_deleted"] == 4 and sweep["cursor"] == b"0"
    many = pairs(r.execute_command("FCALL_RO", "lgprune_many_ro", 0, "2", "1", "t"))
    assert many["checkpoints_deleted"] == 4
    assert snapshot(r) == before
    with pytest.raises(redis.ResponseError):
        r.execute_command("FCALL_RO", "lgprune_thread", 0, "t", "2")
    library = r.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "lgprune")[0]
    functions = dict(zip(library[::2], library[1::2], strict=True))[b"functions"]
    flags = {}
    for entry in functions:
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        flags[fields[b"name"].decode()] = set(fields[b"flags"])
    assert flags["lgprune_version"] == {b"no-writes", b"allow-stale"}
    for name in ("lgprune_thread", "lgprune_many", "lgprune_sweep"):
        assert flags[name] == {b"allow-oom", b"no-cluster"}
        assert flags[name + "_ro"] == {b"no-writes", b"no-cluster"}
