"""Every pruning rule of the core issue, against a real Redis and real graphs."""

from __future__ import annotations

import time

import pytest
import redis
from helpers import (
    LongDeltaState,
    approve_turns,
    chat,
    chat_graph,
    checkpoint_ids,
    config_of,
    delta_graph,
    delta_turns,
    every_write_has_its_checkpoint,
    needs_delta_saver,
    put_checkpoints,
    snapshot,
    states_by_checkpoint,
    subgraph_graph,
    uuid6_at,
)
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.redis import RedisSaver

from lgprune import InvalidArgumentError, Pruner


def keys_of(r: redis.Redis, pattern: str) -> set[bytes]:
    return set(r.scan_iter(match=pattern, count=1000))


def namespaces(r: redis.Redis, thread_id: str) -> set[str]:
    """The namespaces of a colon-free thread's checkpoint keys (a namespace may hold colons)."""
    return {k.decode().split(":", 2)[2].rsplit(":", 1)[0] for k in keys_of(r, f"checkpoint:{thread_id}:*")}


def test_keeps_the_newest_n_and_deletes_the_rest_with_their_writes(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    app = chat_graph(saver)
    chat(app, "chat-1", turns=9)
    ids = checkpoint_ids(saver, "chat-1")
    writes_before = keys_of(r, "checkpoint_write:chat-1:*")
    assert len(ids) > 20 and writes_before

    result = pruner.prune("chat-1", 5)

    assert checkpoint_ids(saver, "chat-1") == ids[:5]
    assert result.checkpoints_deleted == len(ids) - 5
    assert result.checkpoints_kept == 5
    doomed = ids[5:]
    left_writes = keys_of(r, "checkpoint_write:chat-1:*")
    assert not [k for k in left_writes if any(cid.encode() in k for cid in doomed)]
    assert result.writes_deleted == len(writes_before) - len(left_writes)
    assert not [cid for cid in doomed if r.exists(f"write_keys_zset:chat-1:__empty__:{cid}")]
    assert r.get("checkpoint_latest:chat-1:__empty__") == f"checkpoint:chat-1:__empty__:{ids[0]}".encode()
    # the graph goes on from where it was
    before = app.get_state(config_of("chat-1")).values["messages"]
    chat(app, "chat-1", turns=1)
    assert app.get_state(config_of("chat-1")).values["messages"][: len(before)] == before


def test_keys_deleted_counts_every_key_that_went(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    put_checkpoints(saver, "t", 30, writes=3)
    before = r.dbsize()
    result = pruner.prune("t", 4)
    assert result.keys_deleted == before - r.dbsize()
    assert result.keys_deleted == result.checkpoints_deleted * 2 + result.writes_deleted  # + zsets
    assert (result.checkpoints_deleted, result.writes_deleted) == (26, 78)


def test_case_variant_thread_is_left_alone(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    put_checkpoints(saver, "Wang1", 12)
    put_checkpoints(saver, "wang1", 12)
    put_checkpoints(saver, "WANG1", 3)
    others = snapshot(r, skip_thread="Wang1")

    result = pruner.prune("Wang1", 2)

    assert result.checkpoints_deleted == 10
    assert len(checkpoint_ids(saver, "Wang1")) == 2
    assert snapshot(r, skip_thread="Wang1") == others


@pytest.mark.parametrize("thread_id", ["wang1", "wang1:20250729235038043", "wang1:2025:x"])
def test_thread_ids_with_colons_prune_only_themselves(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, thread_id: str
) -> None:
    for tid in ("wang1", "wang1:20250729235038043", "wang1:2025:x", "wang1:2025"):
        put_checkpoints(saver, tid, 8)
    others = snapshot(r, skip_thread=thread_id)
    assert pruner.prune(thread_id, 3).checkpoints_deleted == 5
    assert len(checkpoint_ids(saver, thread_id)) == 3
    assert snapshot(r, skip_thread=thread_id) == others


def test_threads_whose_keys_extend_ours_are_left_alone(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    """Their TAG pieces fold to ours, and their keys start with our key prefixes: a subgraph
    checkpoint of `wang1:2025,Wang1` reads as one of `wang1` in namespace `2025,Wang1:tools`,
    a root checkpoint of `wang1:__empty__:x,WANG1` as one of `wang1` with the id
    `x,WANG1:__empty__:<id>`. Only each document's own thread_id, and a root id without a
    colon, tell them apart."""
    ours = put_checkpoints(saver, "wang1", 6, writes=1)
    put_checkpoints(saver, "wang1:2025,Wang1", 4, writes=1, ns="tools")
    put_checkpoints(saver, "wang1:__empty__:x,WANG1", 3, writes=1)
    before = snapshot(r)  # (snapshot's skip_thread="wang1" would skip theirs too)

    assert pruner.prune("wang1", 2).checkpoints_deleted == 4

    after = snapshot(r)
    doomed = {
        key.encode()
        for step, cid in enumerate(ours[:4])
        for key in (
            f"checkpoint:wang1:__empty__:{cid}",
            f"write_keys_zset:wang1:__empty__:{cid}",
            f"checkpoint_write:wang1:__empty__:{cid}:task-{step}:0",
        )
    }
    assert set(before) - set(after) == doomed
    assert after == {k: v for k, v in before.items() if k not in doomed}


def test_a_witness_from_the_parent_chain_must_be_the_threads_own(r: redis.Redis, saver: RedisSaver) -> None:
    """A thread too large for one call is listed by its root window, whose newest `keep` are the
    witnesses each doomed checkpoint must have newer than it. A key names no thread by itself:
    namespace `1:__empty__` of thread `w` spells the root keys of `w:1`. Here `w:1` lost its
    checkpoint 28 and `w` stored one under that very key: it is no witness of `w:1`, which
    keeps 29, 27 and 26, and `w`'s checkpoint stays."""
    ours = put_checkpoints(saver, "w:1", 30, writes=1)
    stolen = f"checkpoint:w:1:__empty__:{ours[28]}"
    r.delete(stolen)
    pointer = r.get("checkpoint_latest:w:1:__empty__")
    put_checkpoints(saver, "w", 1, writes=0, ns="1:__empty__", ids_given=[ours[28]])
    r.set("checkpoint_latest:w:1:__empty__", pointer)  # the saver's put of `w` moved ours
    assert r.json().get(stolen, "$.thread_id") == ["w"]
    foreign = r.json().get(stolen)
    # a case variant shares our tag: 129 tagged entries, more than one call of BUDGET 100
    # lists (so ours are listed by the window), though all 26 doomed fit that call
    variant = put_checkpoints(saver, "W:1", 100, writes=0)

    result = Pruner(r, budget=100).prune("w:1", 3)

    # (the keys of `w:1`'s root: 28 is the one `w` holds)
    assert set(checkpoint_ids(saver, "w:1")) == {ours[29], ours[28], ours[27], ours[26]}
    assert result.checkpoints_deleted == 26
    assert r.json().get(stolen) == foreign
    assert set(checkpoint_ids(saver, "W:1")) == set(variant)


ODD_IDS = [
    "",
    "a b|c",
    "a|b",
    "a,b",
    "a,",
    " padded ",
    "x} | @thread_id:{*",
    "*",
    "-a",
    "\\",
    "\\:",
    "a\\:b",
    "\\,x",
    "\\$t",
    "%a%",
    "tab\there",
    "Ünïcödé 😀",
    "ünïcödé 😀",
    "{}|*?[]-@.\"'`",
    "İ",
]


@pytest.mark.parametrize("thread_id", ODD_IDS, ids=repr)
def test_any_thread_id_matches_exactly(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, thread_id: str
) -> None:
    for tid in [*ODD_IDS, "a", "b", "padded", "A B|C"]:
        put_checkpoints(saver, tid, 4, writes=1)
    others = snapshot(r, skip_thread=thread_id or "00000000-0000-0000-0000-000000000000")

    result = pruner.prune(thread_id, 1)

    assert result.checkpoints_deleted == 3
    assert len(checkpoint_ids(saver, thread_id)) == 1
    assert snapshot(r, skip_thread=thread_id or "00000000-0000-0000-0000-000000000000") == others


def test_keep_zero_deletes_the_thread_and_its_latest_pointer(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    chat(chat_graph(saver), "gone", turns=3)
    put_checkpoints(saver, "stays", 3)
    stays = snapshot(r, skip_thread="gone")
    result = pruner.prune("gone", 0)
    assert result.checkpoints_kept == 0
    assert not keys_of(r, "*gone*")
    assert snapshot(r) == stays


def test_a_thread_within_keep_is_untouched(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    put_checkpoints(saver, "small", 5)
    before = snapshot(r)
    result = pruner.prune("small", 5)
    assert (result.keys_deleted, result.checkpoints_kept, result.calls) == (0, 5, 1)
    assert pruner.prune("missing", 1).calls == 1
    assert snapshot(r) == before


def test_keep_applies_per_namespace(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    put_checkpoints(saver, "ns", 6)
    put_checkpoints(saver, "ns", 6, ns="tools:0b7f")  # newer than every root checkpoint
    pruner.prune("ns", 2)
    assert len(checkpoint_ids(saver, "ns")) == 2
    assert len(checkpoint_ids(saver, "ns", "tools:0b7f")) == 2


def test_dry_run_deletes_nothing_and_counts_what_would_go(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    chat(chat_graph(saver), "dry", turns=6)
    before = snapshot(r)
    planned = pruner.prune("dry", 3, dry_run=True)
    assert snapshot(r) == before
    done = pruner.prune("dry", 3)
    assert (planned.checkpoints_deleted, planned.writes_deleted, planned.keys_deleted) == (
        done.checkpoints_deleted,
        done.writes_deleted,
        done.keys_deleted,
    )
    assert planned.checkpoints_deleted > 0


def test_writes_are_found_through_the_index_even_without_their_registry(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    ids = put_checkpoints(saver, "reg", 6, writes=2)
    for cid in ids:
        r.delete(f"write_keys_zset:reg:__empty__:{cid}")
    result = pruner.prune("reg", 2)
    assert result.writes_deleted == 8
    assert len(keys_of(r, "checkpoint_write:reg:*")) == 4


def test_a_checkpoint_goes_only_in_the_call_that_takes_all_its_writes(
    r: redis.Redis, saver: RedisSaver
) -> None:
    """A budget of 10 keys takes two checkpoints of 3 writes (5 keys each) per call: the third
    checkpoint, whose writes no longer fit, stays for the next call."""
    ids = put_checkpoints(saver, "t", 12, writes=3)
    result = Pruner(r, budget=10).prune("t", 2)
    assert checkpoint_ids(saver, "t") == ids[::-1][:2]
    assert (result.checkpoints_deleted, result.writes_deleted) == (10, 30)
    assert every_write_has_its_checkpoint(r)


def test_writes_beyond_one_answer_are_looked_up_by_checkpoint_id(r: redis.Redis, saver: RedisSaver) -> None:
    """A thread listed whole, whose writes are more than a call reads (2 x BUDGET): a kept
    subgraph checkpoint's 25 writes, stored first, would fill the answer of the query over
    the thread's writes, leaving out those of the doomed root checkpoints."""
    kept = put_checkpoints(saver, "t", 1, writes=25, ns="tools", age=-3600)  # by a clock an hour ahead
    ids = put_checkpoints(saver, "t", 10, writes=1)
    result = Pruner(r, budget=10).prune("t", 2)  # lists 12 checkpoints, reads 20 writes per call
    assert checkpoint_ids(saver, "t") == ids[::-1][:2]
    assert checkpoint_ids(saver, "t", "tools") == kept
    assert (result.checkpoints_deleted, result.writes_deleted) == (8, 8)
    assert every_write_has_its_checkpoint(r)


@pytest.mark.parametrize("pattern", ["x,{:03d}", " {:03d} ", "\\${:03d}", "a\\:{:03d}", "{:03d}\\"])
def test_writes_of_odd_checkpoint_ids_go_with_them_when_found_by_id(
    r: redis.Redis, saver: RedisSaver, pattern: str
) -> None:
    ids = [pattern.format(step) for step in range(30)]
    put_checkpoints(saver, "odd", 30, writes=2, ns="sub", ids_given=ids)
    # a budget of 10 keys lists the thread in parts, so writes are looked up by checkpoint id
    result = Pruner(r, budget=10).prune("odd", 2)
    assert result.checkpoints_deleted == 28
    assert result.writes_deleted == 56
    assert len(keys_of(r, "checkpoint_write:odd:*")) == 4


def test_a_kept_checkpoints_writes_stay_when_its_key_extends_a_deleted_ones(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    # the writes of "a:b" start with the key prefix of "a"'s writes
    put_checkpoints(saver, "ext", 2, writes=2, ns="sub", ids_given=["a", "a:b"])
    kept = keys_of(r, "checkpoint_write:ext:sub:a:b:*")
    assert pruner.prune("ext", 1).checkpoints_deleted == 1
    assert r.exists("checkpoint:ext:sub:a:b") and not r.exists("checkpoint:ext:sub:a")
    assert keys_of(r, "checkpoint_write:ext:*") == kept


def test_another_threads_write_under_our_key_prefix_stays(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    # thread "abc,x" is tagged "abc" like ours, and its write in namespace "y", task "X1:T",
    # has a key that starts with the write prefix of our checkpoint "X1"
    put_checkpoints(saver, "abc,x:y", 2, writes=1, ids_given=["X1", "X2"])
    config = saver.put(
        config_of("abc,x", ns="y"),
        {**empty_checkpoint(), "id": "__empty__"},
        {"source": "loop", "step": 0},
        {},
    )
    saver.put_writes(config, [("step", 1)], task_id="X1:T")
    theirs = keys_of(r, "checkpoint_write:abc,x:y:__empty__:X1:T:*")
    assert theirs
    assert pruner.prune("abc,x:y", 1).writes_deleted == 1
    assert keys_of(r, "checkpoint_write:abc,x:y:__empty__:X1:T:*") == theirs
    assert not r.exists("checkpoint:abc,x:y:__empty__:X1")


def test_custom_prefixes(r: redis.Redis, pruner: Pruner) -> None:
    custom = RedisSaver(redis_client=r, checkpoint_prefix="app_ckpt", checkpoint_write_prefix="app_writes")
    custom.setup()
    default = RedisSaver(redis_client=r)
    default.setup()
    put_checkpoints(custom, "t", 7)
    put_checkpoints(default, "t", 7)
    untouched = {k: r.dump(k) for k in r.scan_iter(match="checkpoint*")}

    # only one prefix given: the writes would be orphaned, so nothing is deleted
    with pytest.raises(InvalidArgumentError, match="checkpoint_write_prefix"):
        Pruner(r, checkpoint_prefix="app_ckpt").prune("t", 2)
    assert len(keys_of(r, "app_ckpt:t:*")) == 7
    result = Pruner(r, checkpoint_prefix="app_ckpt", checkpoint_write_prefix="app_writes").prune("t", 2)

    assert (result.checkpoints_deleted, result.writes_deleted) == (5, 10)
    assert len(keys_of(r, "app_ckpt:t:*")) == 2
    assert len(keys_of(r, "app_writes:t:*")) == 4
    assert {k: r.dump(k) for k in r.scan_iter(match="checkpoint*")} == untouched


def test_subgraph_state_of_every_kept_checkpoint_is_unchanged(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    app = subgraph_graph(saver)
    approve_turns(app, "sub", turns=4, leave_open=True)
    kept = checkpoint_ids(saver, "sub")[:3]
    states = states_by_checkpoint(app, "sub", kept)
    assert any(state[5] and state[5][0][3] for state in states.values())  # a pending subgraph state
    open_run = app.get_state(config_of("sub"), subgraphs=True).tasks[0].state.config["configurable"]
    runs_before = namespaces(r, "sub") - {"__empty__"}
    # 4 approved runs and the open one: `keep` alone would leave 3 of each
    assert len(runs_before) == 5 and open_run["checkpoint_ns"] in runs_before

    pruner.prune("sub", 3)

    assert checkpoint_ids(saver, "sub") == kept
    assert states_by_checkpoint(app, "sub", kept) == states
    # every run older than the oldest kept root checkpoint went whole: root + the open run are left
    assert namespaces(r, "sub") == {"__empty__", open_run["checkpoint_ns"]}
    # and the open run can still be approved
    from langgraph.types import Command

    app.invoke(Command(resume="late"), config_of("sub"))
    assert app.get_state(config_of("sub")).values["log"][-2:] == ["approved:late", "post"]


@needs_delta_saver
def test_delta_state_survives_keep_2(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    app = delta_graph(saver)
    delta_turns(app, "delta", turns=7)
    ids = checkpoint_ids(saver, "delta")
    kept_states = states_by_checkpoint(app, "delta", ids[:2])
    history = app.get_state(config_of("delta")).values["msgs"]
    assert len(history) > 4

    result = pruner.prune("delta", 2)

    assert result.delta_ancestors_kept > 0
    assert 2 < result.checkpoints_kept < len(ids)
    assert states_by_checkpoint(app, "delta", ids[:2]) == kept_states
    # the conversation goes on with all of its history. (The saver itself can
    # drop a write it raced with, so the new turn's own messages are not checked.)
    delta_turns(app, "delta", turns=1)
    assert app.get_state(config_of("delta")).values["msgs"][: len(history)] == history


@pytest.mark.parametrize(("parent_age_s", "deletes"), [(0, False), (3600, True)])
@needs_delta_saver
def test_a_delta_chain_through_a_parent_not_stored_yet_holds_older_checkpoints(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, parent_age_s: int, deletes: bool
) -> None:
    """A saver writing now can store the newest checkpoint before its parent (seen in
    the concurrency test): the chain beyond cannot be judged, so nothing older goes.
    A parent id older than the grace (10 minutes) is taken as gone for good."""
    app = delta_graph(saver)
    delta_turns(app, "delta", turns=7)
    ids = checkpoint_ids(saver, "delta")
    in_flight = uuid6_at((time.time() - parent_age_s) * 1000)
    r.json().set(f"checkpoint:delta:__empty__:{ids[0]}", "$.parent_checkpoint_id", in_flight)
    result = pruner.prune("delta", 2)
    assert (result.checkpoints_deleted > 0) is deletes
    assert len(checkpoint_ids(saver, "delta")) == len(ids) - result.checkpoints_deleted


@needs_delta_saver
def test_the_savers_own_prune_loses_delta_state(r: redis.Redis, saver: RedisSaver) -> None:
    """The failure lgprune exists to avoid, shown on the same graph."""
    app = delta_graph(saver)
    delta_turns(app, "delta", turns=7)
    before = app.get_state(config_of("delta")).values
    saver.prune(["delta"], keep_last=2)
    assert app.get_state(config_of("delta")).values != before


@needs_delta_saver
def test_delta_and_non_delta_threads_side_by_side(r: redis.Redis, saver: RedisSaver, pruner: Pruner) -> None:
    delta_turns(delta_graph(saver), "d", turns=9)
    chat(chat_graph(saver), "c", turns=5)
    assert pruner.prune("c", 2).delta_ancestors_kept == 0
    assert pruner.prune("d", 1).delta_ancestors_kept > 0


@needs_delta_saver
def test_delta_history_of_a_fork_outside_the_root_window_is_kept(r: redis.Redis, saver: RedisSaver) -> None:
    """Time travel: a run forked from the end of turn 2 while the main line's last
    checkpoints were still being stored (their puts 2 s late, as a slow writer's are). The
    root window, anchored at the checkpoint stored last, then holds those and not the fork,
    whose ids are the thread's newest and whose DeltaChannel history runs back to turn 2.
    The window cannot prove it holds the newest `keep`, so the root is listed again by id."""
    app = delta_graph(saver)
    delta_turns(app, "fork", turns=12)
    main = checkpoint_ids(saver, "fork")  # newest first
    app.invoke({"msgs": ["fork"]}, config_of("fork", main[-6]), durability="sync")  # from the end of turn 2
    fork = checkpoint_ids(saver, "fork")[:3]
    assert not set(fork) & set(main)
    stored = r.json().get(f"checkpoint:fork:__empty__:{fork[0]}", "$.checkpoint_ts")[0] + 2000
    for late, cid in enumerate(reversed(main[:6])):  # the main line's newest 6, stored last
        r.json().set(f"checkpoint:fork:__empty__:{cid}", "$.checkpoint_ts", stored + late)
    r.set("checkpoint_latest:fork:__empty__", f"checkpoint:fork:__empty__:{main[0]}")
    states = states_by_checkpoint(app, "fork", fork)

    result = Pruner(r, budget=10).prune("fork", 3)  # many calls, each listing part of the thread

    assert checkpoint_ids(saver, "fork")[:3] == fork
    assert states_by_checkpoint(app, "fork", fork) == states
    assert result.calls > 1 and result.delta_ancestors_kept > 0


def test_a_thread_of_more_than_10000_checkpoints_is_pruned_fully(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    ids = put_checkpoints(saver, "huge", 10_200, writes=1)
    put_checkpoints(saver, "HUGE", 5, writes=1)
    result = pruner.prune("huge", 10)
    assert checkpoint_ids(saver, "huge") == sorted(ids, reverse=True)[:10]
    assert (result.checkpoints_deleted, result.writes_deleted) == (10_190, 10_190)
    assert result.calls > 1
    assert len(checkpoint_ids(saver, "HUGE")) == 5


def test_a_large_thread_with_many_newer_namespaces_still_prunes_its_root(
    r: redis.Redis, saver: RedisSaver
) -> None:
    """More checkpoints than one call lists, most in subgraph runs newer than the root."""
    root = put_checkpoints(saver, "many", 20, writes=1)
    for i in range(40):
        put_checkpoints(saver, "many", 3, writes=1, ns=f"child:{i:03d}")
    result = Pruner(r, budget=20).prune("many", 5)  # lists 25 root + 25 others per call
    assert checkpoint_ids(saver, "many") == sorted(root, reverse=True)[:5]
    assert result.checkpoints_deleted == 15
    assert all(len(checkpoint_ids(saver, "many", f"child:{i:03d}")) == 3 for i in range(40))


def test_the_checkpoint_the_latest_pointer_names_is_never_pruned(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    """Ids out of order (custom ids, clock skew): the last put may not have the newest id."""
    put_checkpoints(saver, "skew", 6)
    late = put_checkpoints(saver, "skew", 1, age=3600)[0]  # put last, with an hour-old id
    assert r.get("checkpoint_latest:skew:__empty__") == f"checkpoint:skew:__empty__:{late}".encode()
    pruner.prune("skew", 2)
    assert late in checkpoint_ids(saver, "skew")
    assert len(checkpoint_ids(saver, "skew")) == 3  # the newest 2 by id, and the latest put
    assert saver.get_tuple(config_of("skew")) is not None
    pruner.prune("skew", 0)
    assert not list(r.scan_iter(match="*skew*"))


@needs_delta_saver
def test_a_delta_thread_larger_than_one_call_keeps_its_state(r: redis.Redis, saver: RedisSaver) -> None:
    app = delta_graph(saver)
    delta_turns(app, "big-delta", turns=20)
    ids = checkpoint_ids(saver, "big-delta")
    kept = states_by_checkpoint(app, "big-delta", ids[:3])
    result = Pruner(r, budget=10).prune("big-delta", 3)  # many calls, each seeing part of the thread
    assert result.calls > 1 and result.delta_ancestors_kept > 0
    assert states_by_checkpoint(app, "big-delta", ids[:3]) == kept


@needs_delta_saver
def test_delta_history_behind_a_newest_checkpoint_without_it_is_kept(
    r: redis.Redis, saver: RedisSaver
) -> None:
    """The newest checkpoint shows no DeltaChannel, so a large thread's first listing is a narrow
    window; the older kept checkpoints rebuild delta state, so the plan must look wider."""
    app = delta_graph(saver)
    delta_turns(app, "mixed-delta", turns=20)
    put_checkpoints(saver, "mixed-delta", 1, writes=0)  # newest: a plain checkpoint
    ids = checkpoint_ids(saver, "mixed-delta")
    kept = states_by_checkpoint(app, "mixed-delta", ids[1:3])
    result = Pruner(r, budget=10).prune("mixed-delta", 3)  # many calls, each seeing part of the thread
    assert result.calls > 1 and result.delta_ancestors_kept > 0
    assert checkpoint_ids(saver, "mixed-delta")[:3] == ids[:3]
    assert states_by_checkpoint(app, "mixed-delta", ids[1:3]) == kept


def test_a_checkpoint_with_more_writes_than_a_call_reads_does_not_stall_the_thread(
    r: redis.Redis, saver: RedisSaver
) -> None:
    # an old subgraph run whose one checkpoint has 300 writes, then 10 root checkpoints:
    # at budget 100 a call reads 200 writes, and one chunk of all the doomed ids is cut short
    put_checkpoints(saver, "t", 1, writes=300, ns="tools:1")
    ids = put_checkpoints(saver, "t", 10, writes=1)
    result = Pruner(r, budget=100).prune("t", 2)
    assert checkpoint_ids(saver, "t") == ids[::-1][:2]
    assert checkpoint_ids(saver, "t", "tools:1") == []
    assert result.checkpoints_deleted == 8 + 1 and result.writes_deleted == 8 + 300
    assert every_write_has_its_checkpoint(r)


@needs_delta_saver
def test_a_delta_parent_that_is_only_a_placeholder_holds_the_history(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    delta_turns(delta_graph(saver, LongDeltaState), "x", 4)
    ids = checkpoint_ids(saver, "x")
    parent = r.json().get(f"checkpoint:x:__empty__:{ids[0]}", "$.parent_checkpoint_id")[0]
    r.delete(f"checkpoint:x:__empty__:{parent}")
    saver.put_writes(config_of("x", parent), [("msgs", ["late"])], task_id="t")  # its put not landed
    before = snapshot(r)
    assert pruner.prune("x", 1).keys_deleted == 0
    assert snapshot(r) == before


def test_a_thread_with_a_comma_never_takes_a_namespace_that_spells_its_root(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    # thread T2 = "longestpiece,x" stores namespace "__empty__,r:__empty__": its keys are
    # those of the root of thread T = "longestpiece,x:__empty__,r", whose TAG query (its
    # longest piece) matches T2, and whose root query matches the piece "__empty__"
    other, ns = "longestpiece,x", "__empty__,r:__empty__"
    ours = other + ":__empty__,r"
    ids = put_checkpoints(saver, ours, 3, writes=1)
    put_checkpoints(saver, other, 2, writes=2, ns=ns)
    before = snapshot(r)
    pruner.prune(ours, 1)
    expected = set()
    for step, checkpoint_id in enumerate(ids[:2]):
        stem = f"{ours}:__empty__:{checkpoint_id}"
        expected |= {
            f"checkpoint:{stem}",
            f"write_keys_zset:{stem}",
            f"checkpoint_write:{stem}:task-{step}:0",
        }
    assert {k.decode() for k in before if not r.exists(k)} == expected


def prune_raw(r: redis.Redis, thread_id: str, keep: int, *options: str) -> int:
    """lgprune_thread until `more` is 0 (as Pruner.prune loops); the keys it deleted."""
    Pruner(r).install()
    deleted = 0
    for _ in range(500):
        reply = r.fcall("lgprune_thread", 0, thread_id, str(keep), *options)
        fields = dict(zip(reply[::2], reply[1::2], strict=True))
        deleted += int(fields[b"keys_deleted"])
        if int(fields[b"more"]) == 0:
            return deleted
    raise AssertionError("the prune did not finish in 500 calls")


def test_idle_ttl_never_judges_a_large_thread_idle_by_a_pointer_to_an_older_checkpoint(
    r: redis.Redis, saver: RedisSaver
) -> None:
    day = 86_400
    put_checkpoints(saver, "idle", 150, writes=1, age=2 * day)
    young = put_checkpoints(saver, "idle", 1, writes=1)[0]  # made now: the thread is not idle
    late = put_checkpoints(saver, "idle", 1, writes=1, age=3 * day)[0]  # put last: the pointer names it
    prune_raw(r, "idle", 3, "BUDGET", "20", "IDLE_TTL", str(day * 1000))
    left = checkpoint_ids(saver, "idle")
    assert young in left and late in left
    assert r.get("checkpoint_latest:idle:__empty__") is not None
    assert saver.get_tuple(config_of("idle")) is not None


@pytest.mark.parametrize("first", ["case variant", "own subgraphs"])
def test_a_large_thread_whose_first_index_entries_are_not_its_root_is_still_pruned(
    r: redis.Redis, saver: RedisSaver, first: str
) -> None:
    if first == "case variant":
        put_checkpoints(saver, "STALL", 200, writes=0)  # fills the tag's first entries
    else:
        for i in range(30):
            put_checkpoints(saver, "stall", 1, writes=0, ns=f"early:{i:03d}")
    root = put_checkpoints(saver, "stall", 50, writes=0)
    for i in range(30):
        put_checkpoints(saver, "stall", 1, writes=0, ns=f"late:{i:03d}")
    variant = snapshot(r, skip_thread="stall")
    assert prune_raw(r, "stall", 3, "BUDGET", "20") > 0
    assert sorted(checkpoint_ids(saver, "stall")) == sorted(root[-3:])
    assert snapshot(r, skip_thread="stall") == variant
