"""LangGraph.js stores: what @langchain/langgraph-checkpoint-redis 1.0 writes, pruned by lgprune
(LAYOUT js) and read back by that saver. Real graphs, through Node.js (tests/js/saver.mjs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from jsaver import blobs_read_back, dumps, read, unreferenced_blobs, write
from langgraph.checkpoint.redis import RedisSaver
from test_acl import readme_acl
from test_result_cap import result_cap
from typer.testing import CliRunner

from lgprune import Pruner
from lgprune.cli import app
from lgprune.errors import IndexMissingError, InvalidArgumentError, LgpruneError, MixedStoreError

pytestmark = pytest.mark.usefixtures("js_saver")
README = Path(__file__).resolve().parent.parent / "README.md"

# hostile neighbours: case variants, a comma-joined id (one TAG value in the JS index), and a
# thread whose id starts with another's and a colon (the JS saver's deleteThread globs those)
THREADS = [
    ("wang1", 5, "chat"),
    ("Wang1", 3, "chat"),
    ("a", 4, "chat"),
    ("a,b", 3, "chat"),
    ("user", 4, "chat"),
    ("user:42:chat", 3, "chat"),
    ("sg", 3, "subgraph"),
]
IDS = [t for t, _, _ in THREADS]


@pytest.fixture
def store(r: redis.Redis, redis_url: str) -> dict[str, Any]:
    """The threads, written by the JS saver; what it reads back of each."""
    write(redis_url, THREADS)
    return read(redis_url, IDS)


def root_ids(state: dict[str, Any]) -> list[str]:
    """The root checkpoints the JS saver lists, newest id first (its list() orders them by
    checkpoint_ts, whose ties it orders as the index does)."""
    return sorted((c["id"] for c in state["namespaces"][""]), reverse=True)


def assert_kept_exactly(before: dict[str, Any], after: dict[str, Any], keep: int) -> None:
    """The root lists the newest `keep` checkpoints it listed before; every checkpoint the saver
    still lists (any namespace) reads back as before, and so does the graph's state of each."""
    assert root_ids(after) == root_ids(before)[:keep]
    for ns, listed in after["namespaces"].items():
        old = {c["id"]: c for c in before["namespaces"][ns]}
        assert listed, ns
        for c in listed:
            assert c == old[c["id"]]
    for cid, state in after["states"].items():
        assert state == before["states"][cid]
    assert after["latest"] == before["latest"]


@pytest.mark.parametrize("target", ["wang1", "a", "a,b", "user", "sg"])
def test_a_prune_keeps_the_newest_and_the_js_saver_reads_them_back(
    r: redis.Redis, redis_url: str, store: dict[str, Any], target: str
) -> None:
    keys = dumps(r)
    result = Pruner(r).prune(target, 2)  # the layout is found: only the JS indexes exist
    after = read(redis_url, IDS)
    assert_kept_exactly(store[target], after[target], 2)
    assert result.checkpoints_deleted > 0 and result.blobs_deleted > 0
    # no other thread lost or changed a key: a case variant, a comma-joined id, a longer id
    for key, (owner, dump) in keys.items():
        if owner != target:
            assert r.dump(key) == dump, key
    for other in IDS:
        if other != target:
            assert after[other] == store[other]
    assert unreferenced_blobs(r, target) == []
    # the graph goes on from the newest kept checkpoint, its whole history in state
    write(redis_url, [(target, 1, "subgraph" if target == "sg" else "chat")])
    again = read(redis_url, [target])[target]
    was, now = (s["states"][s["latest"]]["values"] for s in (store[target], again))
    assert now["turns"] == was["turns"] + 1
    assert now["messages"][: len(was["messages"])] == was["messages"]
    assert len(now["messages"]) > len(was["messages"])


def test_a_dry_run_counts_what_the_prune_deletes(r: redis.Redis, store: dict[str, Any]) -> None:
    keys = dumps(r)
    dry = Pruner(r).prune("sg", 1, dry_run=True)
    assert dumps(r) == keys
    done = Pruner(r).prune("sg", 1)
    assert (dry.checkpoints_deleted, dry.writes_deleted, dry.blobs_deleted, dry.keys_deleted) == (
        done.checkpoints_deleted,
        done.writes_deleted,
        done.blobs_deleted,
        done.keys_deleted,
    )


def test_keep_zero_deletes_the_thread_and_only_it(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    keys = dumps(r)
    Pruner(r, layout="js").prune("user", 0)
    left = dumps(r)
    assert [k for k, (owner, _) in left.items() if owner == "user"] == []
    for key, (owner, dump) in keys.items():
        if owner != "user":
            assert left[key] == (owner, dump)
    after = read(redis_url, ["user", "user:42:chat"])
    assert after["user"]["namespaces"] == {"": []} and after["user:42:chat"] == store["user:42:chat"]


def test_small_budgets_end_where_one_call_does(r: redis.Redis, redis_url: str, store: dict[str, Any]) -> None:
    # a checkpoint that goes in a later call reads the thread's first blob back (as a fork of an
    # early checkpoint would): one call must not take that blob before the checkpoint. (Thread
    # "a": no case variant, so one call lists it whole and judges its blobs.)
    late = sorted(root_ids(store["a"]))[7]
    r.json().set(f"checkpoint:a::{late}", "$.checkpoint.channel_versions.__start__", 1)
    stored = {k for k in blobs_read_back(r, "a") if r.exists(k)}
    assert "checkpoint_blob:a::__start__:1" in stored
    Pruner(r).install()
    first = r.fcall("lgprune_thread", 0, "a", "1", "BUDGET", "15")  # (leaves keys unspent)
    assert first[-2:] == [b"more", 1]
    # a call that leaves doomed checkpoints for the next one leaves every blob they read back
    assert all(r.exists(k) for k in blobs_read_back(r, "a") & stored)
    result = Pruner(r, budget=10).prune("wang1", 1)
    assert result.calls > 1
    assert_kept_exactly(store["wang1"], read(redis_url, ["wang1"])["wang1"], 1)
    assert unreferenced_blobs(r, "wang1") == []


def test_a_sweep_finds_every_js_thread_without_latest_pointers(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    pruner = Pruner(r)
    stats = pruner.stats(2)
    assert (stats.threads, stats.checkpoints) == (len(IDS), r.ft("checkpoints").info()["num_docs"])
    first = pruner.sweep(2)
    assert (first.kind, first.layout, first.threads_pruned) == ("full", "js", len(IDS))
    assert first.checkpoints_deleted == stats.sweep_checkpoints
    after = read(redis_url, IDS)
    for t in IDS:
        assert_kept_exactly(store[t], after[t], 2)
        assert unreferenced_blobs(r, t) == []
    write(redis_url, [("a", 2, "chat")])
    second = pruner.sweep(2)
    assert (second.kind, second.threads_pruned) == ("incremental", 1)
    assert len(read(redis_url, ["a"])["a"]["namespaces"][""]) == 2


def test_a_blob_being_stored_stays_and_a_stale_one_goes(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    Pruner(r).prune("a", 2)
    newest = store["a"]["latest"]
    oldest_kept = root_ids(store["a"])[1]
    doc = {"thread_id": "a", "checkpoint_ns": "__empty__", "channel": "messages", "type": "json", "value": []}
    # the saver stores a new checkpoint's blobs before the checkpoint: its writer is newer than any
    r.json().set(
        "checkpoint_blob:a::messages:99", "$", {**doc, "version": "99", "checkpoint_id": newest + "z"}
    )
    # a blob nothing reads whose writer is older than the newest checkpoint
    r.json().set(
        "checkpoint_blob:a::messages:98", "$", {**doc, "version": "98", "checkpoint_id": oldest_kept}
    )
    # its fields name another key than its own: not the saver's, left alone
    r.json().set(
        "checkpoint_blob:a::messages:97", "$", {**doc, "version": "96", "checkpoint_id": oldest_kept}
    )
    result = Pruner(r).prune("a", 2)
    assert result.blobs_deleted == 1
    assert r.exists("checkpoint_blob:a::messages:99", "checkpoint_blob:a::messages:97") == 2
    assert not r.exists("checkpoint_blob:a::messages:98")


def test_an_unspellable_version_keeps_the_blobs(r: redis.Redis, store: dict[str, Any]) -> None:
    Pruner(r).prune("a", 2)
    newest = f"checkpoint:a::{store['a']['latest']}"
    stale = "checkpoint_blob:a::messages:98"
    r.json().set(
        stale,
        "$",
        {
            "thread_id": "a",
            "checkpoint_ns": "__empty__",
            "channel": "messages",
            "version": "98",
            "type": "json",
        }
        | {"value": [], "checkpoint_id": root_ids(store["a"])[1]},
    )
    # a version JavaScript may spell otherwise than lgprune (1.5 is "1.5" in both, but a float
    # is not a version lgprune spells): the namespace's blobs stay
    r.json().set(newest, "$.checkpoint.channel_versions.extra", 1.5)
    assert Pruner(r).prune("a", 2).blobs_deleted == 0 and r.exists(stale)
    r.json().delete(newest, "$.checkpoint.channel_versions.extra")
    assert Pruner(r).prune("a", 2).blobs_deleted == 1 and not r.exists(stale)


def test_a_store_both_savers_index_is_refused_and_untouched(r: redis.Redis, store: dict[str, Any]) -> None:
    RedisSaver(redis_client=r).setup()  # the Python saver's index over the same checkpoint: keys
    keys = dumps(r)
    for layout in (None, "python", "js"):
        with pytest.raises(MixedStoreError, match="both savers"):
            Pruner(r, layout=layout).prune("sg", 0)
        with pytest.raises(MixedStoreError):
            Pruner(r, layout=layout).sweep(1)
    assert dumps(r) == keys


def test_layout_mistakes_are_one_clear_error(r: redis.Redis, store: dict[str, Any]) -> None:
    keys = dumps(r)
    with pytest.raises(IndexMissingError, match=r"the js saver.s index \(checkpoints\): pass layout=.js."):
        Pruner(r, layout="python").prune("wang1", 1)
    with pytest.raises(InvalidArgumentError, match="fixed"):
        Pruner(r, layout="js", checkpoint_prefix="other").prune("wang1", 1)
    with pytest.raises(InvalidArgumentError, match="empty thread"):
        Pruner(r).prune("", 1)
    with pytest.raises(InvalidArgumentError, match="orphans"):
        Pruner(r).sweep(1, orphans=True)
    with pytest.raises(InvalidArgumentError, match="layout"):
        Pruner(r, layout="ts")
    assert dumps(r) == keys


def test_the_cli_prunes_and_counts_a_js_store(r: redis.Redis, redis_url: str, store: dict[str, Any]) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["stats", "--url", redis_url, "--keep", "2"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"{len(IDS)} threads,")
    done = runner.invoke(app, ["prune", "wang1", "--keep", "2", "--layout", "js", "--url", redis_url])
    assert done.exit_code == 0, done.output
    assert re.search(r"deleted \d+ checkpoints, \d+ writes, \d+ blobs \(", done.output), done.output
    assert root_ids(read(redis_url, ["wang1"])["wang1"]) == root_ids(store["wang1"])[:2]


def test_stats_and_sweeps_without_any_index_fail_in_one_line(r: redis.Redis, redis_url: str) -> None:
    done = CliRunner().invoke(app, ["stats", "--url", redis_url])
    assert done.exit_code == 1
    assert done.output.count("\n") == 1 and "does not exist" in done.output
    for layout in (None, "python", "js"):  # not "0 threads": there is nothing it could read
        with pytest.raises(IndexMissingError):
            Pruner(r, layout=layout).sweep(1)


def test_the_readmes_redis_cli_loop_sweeps_a_js_store(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (Debian: apt-get install redis-tools)")
    loop = re.search(r"```bash\n(cursor=0\nwhile :; do\n.*?\ndone)\n```", README.read_text(), re.DOTALL)
    assert loop, "the README shows a redis-cli sweep loop"
    script = loop.group(1).replace("redis-cli --raw", f"redis-cli -u {redis_url} --raw")
    script = script.replace('"$cursor" 10 ', '"$cursor" 2 ').replace("604800000)", "604800000 LAYOUT js)")
    Pruner(r).install()
    subprocess.run(["bash", "-c", script], check=True, timeout=60)
    after = read(redis_url, IDS)
    for t in IDS:
        assert_kept_exactly(store[t], after[t], 2)
        assert unreferenced_blobs(r, t) == []


def test_the_readmes_runtime_user_prunes_js_and_a_user_who_may_not_delete_blobs_deletes_nothing(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    Pruner(r).install()
    host, port = r.connection_pool.connection_kwargs["host"], r.connection_pool.connection_kwargs["port"]
    rules = [rule.replace("<password>", "s3cret") for rule in readme_acl("lgprune")]
    # the same user, but blobs read-only: a prune must fail before its first delete
    read_only = ["%R" + rule if rule == "~checkpoint_blob:*" else rule for rule in rules]
    assert read_only != rules
    r.execute_command("ACL", "SETUSER", "blobs-ro", "reset", *read_only)
    r.execute_command("ACL", "SETUSER", "lgprune", "reset", *rules)
    try:
        keys = dumps(r)
        with redis.Redis(host=host, port=port, username="blobs-ro", password="s3cret") as client:
            with pytest.raises(LgpruneError, match="may not delete"):
                Pruner(client).prune("wang1", 1)
            with pytest.raises(LgpruneError, match="may not delete"):
                Pruner(client).sweep(1)
        assert dumps(r) == keys
        # a sweep ends by recording its watermark: a user who may not is told before any delete
        watermarks_ro = [rule.replace("~lgprune:watermarks", "%R~lgprune:watermarks") for rule in rules]
        r.execute_command("ACL", "SETUSER", "blobs-ro", "reset", *watermarks_ro)
        client = redis.Redis(host=host, port=port, username="blobs-ro", password="s3cret")
        with client, pytest.raises(LgpruneError, match="may not write to"):
            Pruner(client).sweep(1)
        assert dumps(r) == keys
        with redis.Redis(host=host, port=port, username="lgprune", password="s3cret") as client:
            assert Pruner(client).sweep(2).threads_pruned == len(IDS)
        after = read(redis_url, IDS)
        for t in IDS:
            assert_kept_exactly(store[t], after[t], 2)
    finally:
        r.execute_command("ACL", "DELUSER", "blobs-ro", "lgprune")


def test_a_full_js_sweep_finds_a_thread_stamped_by_a_clock_far_ahead(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    ahead = 10 * 365 * 86400 * 1000
    for key in r.scan_iter(match="checkpoint:user::*"):
        r.json().numincrby(key.decode(), "$.checkpoint_ts", ahead)
    assert Pruner(r).sweep(2).threads_pruned == len(IDS)
    assert root_ids(read(redis_url, ["user"])["user"]) == root_ids(store["user"])[:2]


def test_a_server_capping_search_results_below_a_segment_sweeps_a_js_store(
    r: redis.Redis, redis_url: str, store: dict[str, Any]
) -> None:
    with result_cap(r, 1_000):  # below what a segment's count may ask (4,001)
        first = Pruner(r).sweep(2)
        write(redis_url, [("a", 1, "chat")])
        second = Pruner(r).sweep(2)
    assert (first.kind, first.threads_pruned, second.kind, second.threads_pruned) == (
        "full",
        len(IDS),
        "incremental",
        1,
    )
