"""The error contract: an error reply means the call deleted nothing, for every entry point.

One budget per call: a thread that cannot be planned within what is left of a call
ends the call there, without an error, and the next call starts with it and a whole
BUDGET; only a thread that no whole BUDGET can prune is an error, and that error
comes before the call's first delete. The pruning functions run at maxmemory too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import LongDeltaState, checkpoint_ids, delta_graph, needs_delta_saver, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver

from lgprune import LgpruneError, Pruner
from lgprune.errors import InvalidArgumentError

BUDGET = 30  # the small thread's prune takes half of it
SMALL_KEYS = 15  # keys of "small"'s 5 doomed checkpoints at keep 1: itself, its write, its registry


def fcall(r: redis.Redis, function: str, *args: object) -> dict[str, Any]:
    reply = r.fcall(function, 0, *args)
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}


@pytest.fixture
def small(saver: RedisSaver) -> list[str]:
    """A plain thread of 6 checkpoints of 1 write each: 15 keys go at keep 1."""
    return put_checkpoints(saver, "small", 6, writes=1)


def long_history(saver: RedisSaver, thread_id: str, turns: int) -> list[str]:
    """A DeltaChannel thread whose kept checkpoint's history is 3 * turns - 1 checkpoints."""
    app = delta_graph(saver, LongDeltaState)
    for turn in range(turns):
        app.invoke({"msgs": [f"user {turn}"]}, {"configurable": {"thread_id": thread_id}})
    return checkpoint_ids(saver, thread_id)


@needs_delta_saver
def test_a_thread_that_does_not_fit_what_is_left_ends_the_call_without_error(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, small: list[str]
) -> None:
    long_ids = long_history(saver, "long", 10)  # a history of 29: fits a whole BUDGET of 30, not 15
    pruner.install()
    first = fcall(r, "lgprune_many", "1", "2", "small", "long", "BUDGET", str(BUDGET))
    assert (first["keys_deleted"], first["next"]) == (SMALL_KEYS, 2)
    assert checkpoint_ids(saver, "small") == small[-1:]
    assert checkpoint_ids(saver, "long") == long_ids
    second = fcall(r, "lgprune_many", "1", "1", "long", "BUDGET", str(BUDGET))
    assert (second["next"], second["delta_ancestors_kept"]) == (0, len(long_ids) - 1)
    # the Python API resumes there by itself
    put_checkpoints(saver, "small2", 6, writes=1)
    result = Pruner(r, budget=BUDGET).prune_many(["small2", "long"], 1)
    assert (result.keys_deleted, result.calls) == (SMALL_KEYS, 2)


def call_until_error(r: redis.Redis, call: list[str], options: list[str]) -> tuple[str, dict[bytes, Any]]:
    """Make `call` (a function and its arguments, thread ids last) again and again, as a
    caller resumes it, until it fails: the error and the keys just before the failing call."""
    function, *args = call
    while True:
        before = snapshot(r)
        try:
            reply = fcall(r, function, *args, *options)
        except redis.ResponseError as error:
            return str(error), before
        if function == "lgprune_sweep":
            assert reply["cursor"] != b"0", "the sweep ended without meeting the thread that fails"
            args = [reply["cursor"].decode(), *args[1:]]
        else:
            assert function == "lgprune_many" and reply["next"] > 0, "every thread was pruned"
            ids = args[2 + reply["next"] - 1 :]
            args = [args[0], str(len(ids)), *ids]


@needs_delta_saver
@pytest.mark.parametrize(
    "call",
    [
        ["lgprune_thread", "long", "1"],
        ["lgprune_many", "1", "1", "long"],
        ["lgprune_many", "1", "2", "small", "long"],
        ["lgprune_many", "1", "3", "small", "long", "small2"],
    ],
    ids=["thread", "many", "many-after-a-delete", "many-between-deletes"],
)
def test_an_error_reply_means_the_call_deleted_nothing(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, small: list[str], call: list[str]
) -> None:
    put_checkpoints(saver, "small2", 6, writes=1)
    long_ids = long_history(saver, "long", 10)  # a history of 29: longer than a whole BUDGET of 25
    pruner.install()
    error, before = call_until_error(r, call, ["BUDGET", "25"])  # 10 left after "small"
    assert error.startswith("LGPRUNE BADARG the DeltaChannel history")
    assert snapshot(r) == before
    assert checkpoint_ids(saver, "long") == long_ids


@needs_delta_saver
def test_a_sweep_names_the_thread_no_budget_can_prune_and_prunes_the_rest(
    r: redis.Redis, saver: RedisSaver, small: list[str]
) -> None:
    put_checkpoints(saver, "small2", 6, writes=1)
    long_ids = long_history(saver, "long", 10)  # a history of 29: longer than a whole BUDGET of 25
    result = Pruner(r, budget=25).sweep(1)
    assert [f.thread_id for f in result.failed] == ["long"] and result.threads_failed == 1
    assert result.failed[0].reason.startswith("BADARG the DeltaChannel history")
    assert checkpoint_ids(saver, "long") == long_ids
    assert checkpoint_ids(saver, "small") == small[-1:] and len(checkpoint_ids(saver, "small2")) == 1
    assert result.cursor == "0" and not result.unfinished


@needs_delta_saver
def test_an_error_after_earlier_calls_deleted_says_what_they_did(
    r: redis.Redis, saver: RedisSaver, small: list[str]
) -> None:
    long_ids = long_history(saver, "long", 10)
    with pytest.raises(InvalidArgumentError, match="raise budget") as raised:
        Pruner(r, budget=20).prune_many(["small", "long"], 1)
    assert raised.value.partial is not None
    assert (raised.value.partial.keys_deleted, raised.value.partial.calls) == (SMALL_KEYS, 1)
    assert checkpoint_ids(saver, "small") == small[-1:]
    assert checkpoint_ids(saver, "long") == long_ids


def test_unreadable_data_after_a_delete_is_met_first_by_the_next_call(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, small: list[str]
) -> None:
    bad = put_checkpoints(saver, "bad", 3, writes=1)
    r.json().set(f"checkpoint:bad:__empty__:{bad[-1]}", "$.metadata", '{"counters_since_delta_snapshot": ')
    pruner.install()
    first = fcall(r, "lgprune_many", "1", "2", "small", "bad")
    assert (first["keys_deleted"], first["next"]) == (SMALL_KEYS, 2)
    before = snapshot(r)
    with pytest.raises(redis.ResponseError, match=r"^LGPRUNE BADDATA"):
        r.fcall("lgprune_many", 0, "1", "1", "bad")
    assert snapshot(r) == before
    with pytest.raises(LgpruneError, match="unreadable metadata"):
        pruner.prune("bad", 1)
    assert snapshot(r) == before


@pytest.fixture
def full_memory(r: redis.Redis) -> Iterator[None]:
    """maxmemory just below what is used, with noeviction: writes are refused."""
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", str(r.info("memory")["used_memory"] - 50_000))
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("one more", "x" * 1000)
        yield
    finally:
        r.config_set("maxmemory", "0")


@pytest.mark.parametrize("how", ["prune", "prune_many", "sweep"])
def test_a_prune_runs_at_maxmemory_and_frees_memory(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner, how: str, request: pytest.FixtureRequest
) -> None:
    ids = put_checkpoints(saver, "big", 300, writes=2)
    pruner.install()
    request.getfixturevalue("full_memory")
    used = r.info("memory")["used_memory"]
    if how == "prune":
        result: Any = pruner.prune("big", 5)
    elif how == "prune_many":
        result = pruner.prune_many(["big"], 5)
    else:
        result = pruner.sweep(5)
    assert result.checkpoints_deleted == len(ids) - 5
    assert checkpoint_ids(saver, "big") == ids[::-1][:5]
    assert r.info("memory")["used_memory"] < used
