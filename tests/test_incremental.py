"""Incremental sweeps: threads found through the index by checkpoint_ts since the last
complete pass of the same rule, against a real Redis and the real saver."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from helpers import checkpoint_ids, config_of, lgprune, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver
from test_result_cap import result_cap

from lgprune import Pruner, SweepResult
from lgprune.errors import InvalidArgumentError
from lgprune.facts import EMPTY_ID, WATERMARKS

README = Path(__file__).resolve().parent.parent / "README.md"


def shift_stamps(r: redis.Redis, thread_id: str, ms: float | None) -> None:
    """Move the checkpoint_ts of every checkpoint of the thread by `ms` (a writer whose
    clock lags), or remove it (None: a document written without one)."""
    for key in r.scan_iter(match=f"checkpoint:{thread_id}:*", count=1000):
        if ms is None:
            r.execute_command("JSON.DEL", key, "$.checkpoint_ts")
        else:
            r.execute_command("JSON.NUMINCRBY", key, "$.checkpoint_ts", -ms)


def watermarks(r: redis.Redis) -> dict[bytes, bytes]:
    return r.hgetall(WATERMARKS)  # type: ignore[return-value]


def every_key(r: redis.Redis) -> set[bytes]:
    return {k for k in r.scan_iter(count=1000) if k != WATERMARKS.encode()}


def test_after_a_complete_pass_only_threads_with_new_checkpoints_are_visited(
    r: redis.Redis, saver: RedisSaver
) -> None:
    for i in range(40):
        put_checkpoints(saver, f"user:{i}", 6, writes=1)
    first = Pruner(r).sweep(3, margin=0)
    assert (first.kind, first.threads_pruned) == ("full", 40)
    active = [f"user:{i}" for i in (3, 17, 29, 38)]
    for thread_id in active:
        put_checkpoints(saver, thread_id, 5, writes=1)
    second = Pruner(r).sweep(3, margin=0)
    assert second.kind == "incremental" and second.since is not None
    assert second.threads_visited == len(active) and second.threads_pruned == len(active)
    assert all(len(checkpoint_ids(saver, f"user:{i}")) == 3 for i in range(40))


def test_a_lagging_writer_is_caught_within_the_margin_and_beyond_it_by_a_full_sweep(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "seed", 1, writes=0)
    assert Pruner(r).sweep(2, margin=60).kind == "full"
    for thread_id, lag in (("within", 30_000), ("beyond", 120_000), ("unstamped", None)):
        put_checkpoints(saver, thread_id, 8, writes=1)
        shift_stamps(r, thread_id, lag)
    dumps = {k: r.dump(k) for k in r.scan_iter(count=1000)}
    before = every_key(r)

    incremental = Pruner(r).sweep(2, margin=60)
    assert incremental.kind == "incremental"
    assert len(checkpoint_ids(saver, "within")) == 2
    assert len(checkpoint_ids(saver, "beyond")) == 8 and len(checkpoint_ids(saver, "unstamped")) == 8
    gone_incremental = before - every_key(r)

    r.delete(*r.keys())  # the same store again, for a full sweep
    for key, value in dumps.items():
        r.restore(key, 0, value)
    full = Pruner(r).sweep(2, full=True)
    assert full.kind == "full"
    assert all(len(checkpoint_ids(saver, t)) == 2 for t in ("within", "beyond"))
    # a checkpoint without checkpoint_ts (no supported saver writes one) is found by no pass
    assert len(checkpoint_ids(saver, "unstamped")) == 8
    gone_full = before - every_key(r)
    assert gone_incremental and gone_incremental < gone_full  # nothing a full sweep keeps


@pytest.mark.parametrize("rule", ["max_age", "idle_ttl"])
def test_age_rules_visit_threads_that_crossed_their_age_since(
    r: redis.Redis, saver: RedisSaver, rule: str
) -> None:
    ages, keep = {rule: 3}, (2 if rule == "max_age" else 6)  # idle_ttl keeps nothing younger
    put_checkpoints(saver, "t", 6, writes=1)
    put_checkpoints(saver, "later", 6, writes=1)
    shift_stamps(r, "later", -60_000)  # far ahead: it crosses no age during the test
    first = Pruner(r).sweep(keep, margin=0, **ages)  # type: ignore[arg-type]
    assert first.kind == "full" and first.keys_deleted == 0  # all younger than 3 s
    time.sleep(3.5)
    second = Pruner(r).sweep(keep, margin=0, **ages)  # type: ignore[arg-type]
    assert second.kind == "incremental" and second.threads_visited == 1
    assert len(checkpoint_ids(saver, "t")) == (2 if rule == "max_age" else 0)
    assert len(checkpoint_ids(saver, "later")) == 6


def test_a_lowered_keep_or_another_rule_runs_a_full_pass_and_each_has_its_watermark(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 8, writes=1)
    kinds = [
        Pruner(r).sweep(keep, max_age=age).kind for keep, age in ((5, None), (5, None), (3, None), (3, 3600))
    ]
    assert kinds == ["full", "incremental", "full", "full"]
    assert len(watermarks(r)) == 6  # three rules, each with its last pass and its last full pass
    assert Pruner(r, checkpoint_prefix="checkpoint").sweep(3).kind == "incremental"
    assert Pruner(r).sweep(3, full=True).kind == "full"
    assert Pruner(r).sweep(3, orphans=True).kind == "full"


def test_a_dry_run_or_an_abandoned_pass_leaves_the_watermark_where_it_was(
    r: redis.Redis, saver: RedisSaver
) -> None:
    for i in range(20):
        put_checkpoints(saver, f"t{i}", 6, writes=1)
    assert Pruner(r).sweep(3, dry_run=True).kind == "full"
    assert watermarks(r) == {}
    Pruner(r).sweep(5)  # installs the library too
    marks = watermarks(r)
    for i in range(20):
        put_checkpoints(saver, f"t{i}", 3, writes=1)
    reply = r.fcall("lgprune_sweep", 0, "0", "5", "BUDGET", "10")  # the client dies after one call
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    assert fields[b"kind"] == b"incremental" and fields[b"cursor"] != b"0"
    assert watermarks(r) == marks
    assert Pruner(r).sweep(5, dry_run=True).kind == "incremental"
    assert watermarks(r) == marks
    done = Pruner(r).sweep(5)
    assert done.kind == "incremental" and done.threads_pruned == 20
    field = next(f for f in marks if not f.startswith(b"full "))  # full passes have their own
    assert int(watermarks(r)[field]) > int(marks[field])


def test_a_cursor_of_another_rule_or_run_is_refused_and_deletes_nothing(
    r: redis.Redis, saver: RedisSaver
) -> None:
    for i in range(10):
        put_checkpoints(saver, f"t{i}", 6, writes=1)
    Pruner(r).install()
    reply = r.fcall("lgprune_sweep", 0, "0", "5", "BUDGET", "10")
    cursor = dict(zip(reply[::2], reply[1::2], strict=True))[b"cursor"]
    keys = every_key(r)
    for args in (("4",), ("5", "DRY_RUN"), ("5", "FULL"), ("5", "MAX_AGE", "1000")):
        with pytest.raises(redis.ResponseError, match="LGPRUNE BADARG CURSOR belongs"):
            r.fcall("lgprune_sweep", 0, cursor, *args)
    for bad in ("i:zz:1:2:3:4:0:", "f:0:1:2:3", "x", "17", "00"):  # numbers: lgprune 0.2's SCAN cursors
        with pytest.raises(redis.ResponseError, match="LGPRUNE BADARG CURSOR"):
            r.fcall("lgprune_sweep", 0, bad, "5")
    assert every_key(r) == keys
    with pytest.raises(InvalidArgumentError):
        Pruner(r).sweep(5, margin=-1)


def test_small_calls_visit_every_active_thread_once_through_narrowed_segments(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "seed", 1, writes=0)
    Pruner(r).sweep(3, margin=0)
    threads = [f"user:{i}" for i in range(60)]
    for thread_id in threads:  # 300 index entries: segments of 100 at most, so several
        put_checkpoints(saver, thread_id, 5, writes=1)
    result = Pruner(r, budget=30).sweep(3, margin=0)
    assert result.kind == "incremental" and result.calls > 10
    # each thread pruned on its first visit (a thread seen in two segments is visited twice)
    assert result.threads_pruned == 60 and result.threads_visited >= 60
    assert all(len(checkpoint_ids(saver, t)) == 3 for t in threads)


def test_checkpoints_written_during_a_pass_are_caught_by_the_next(r: redis.Redis, saver: RedisSaver) -> None:
    threads = [f"user:{i}" for i in range(30)]
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 5, writes=1)
    Pruner(r).sweep(3)
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 2, writes=1)
    written: list[str] = []

    def write_behind(progress: SweepResult) -> None:  # more turns on threads already visited
        if progress.threads_visited and len(written) < 3:
            written.append(threads[len(written)])
            put_checkpoints(saver, written[-1], 4, writes=1)

    Pruner(r, budget=60).sweep(3, on_progress=write_behind)
    assert written and Pruner(r).sweep(3).kind == "incremental"
    assert all(len(checkpoint_ids(saver, t)) == 3 for t in threads)


def test_a_full_pass_runs_once_the_last_full_one_is_older_than_full_every(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 6, writes=1)
    kinds = [Pruner(r).sweep(3, full_every=1).kind for _ in range(2)]
    time.sleep(1.2)
    kinds += [Pruner(r).sweep(3, full_every=1).kind, Pruner(r).sweep(3, full_every=1).kind]
    assert kinds == ["full", "incremental", "full", "incremental"]
    assert Pruner(r).sweep(3, full_every=None).kind == "incremental"


def test_the_command_line_says_which_kind_of_sweep_ran(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 6, writes=1)
    runs = [lgprune("sweep", "--keep", "3", "--url", redis_url, *extra) for extra in ((), (), ("--full",))]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert runs[0].stdout.startswith("sweep (full):")
    assert runs[1].stdout.startswith("sweep (incremental since ")
    assert runs[2].stdout.startswith("sweep (full):")


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli (Debian: redis-tools)")
def test_the_readmes_redis_cli_loop_sweeps_in_full_then_incrementally(
    r: redis.Redis, saver: RedisSaver, redis_url: str
) -> None:
    loop = re.search(r"```bash\n(cursor=0\nwhile :; do\n.*?\ndone)\n```", README.read_text(), re.DOTALL)
    assert loop, "the README shows a redis-cli sweep loop"
    script = loop.group(1).replace("redis-cli --raw", f"redis-cli -u {redis_url} --raw")
    for i in range(5):
        put_checkpoints(saver, f"t{i}", 14, writes=1)
    Pruner(r).install()
    subprocess.run(["bash", "-c", script], check=True, timeout=60)
    assert all(len(checkpoint_ids(saver, f"t{i}")) == 10 for i in range(5))
    put_checkpoints(saver, "t0", 3, writes=1)
    subprocess.run(["bash", "-c", script], check=True, timeout=60)
    assert len(checkpoint_ids(saver, "t0")) == 10
    marks = watermarks(r)
    assert len(marks) == 2 and len(set(marks.values())) == 2  # a full pass, then an incremental one


def test_discovery_returns_each_stored_thread_id_exactly_and_leaves_its_variants_alone(
    r: redis.Redis, saver: RedisSaver
) -> None:
    pairs = [("Wang1", "wang1"), ("a,b", "a"), ("", "x"), ("user:42:chat", "user"), (" pad ", "pad")]
    for thread_id in (t for pair in pairs for t in pair):
        put_checkpoints(saver, thread_id, 4, writes=1)
    assert Pruner(r).sweep(4, margin=0).kind == "full"
    active = [changed for changed, _ in pairs]
    for thread_id in active:
        put_checkpoints(saver, thread_id, 3, writes=1)
    stored = [t or EMPTY_ID for t in active]  # the saver stores thread "" under this id
    before = {k: v for k, v in snapshot(r).items() if not any(f":{t}:".encode() in k for t in stored)}
    result = Pruner(r).sweep(4, margin=0)
    assert result.kind == "incremental" and result.threads_pruned == len(active)
    assert all(len(checkpoint_ids(saver, t)) == 4 for t in active)
    after = snapshot(r)
    assert {k: after.get(k) for k in before} == before  # every other thread byte-identical


def test_a_foreign_document_with_a_stamp_but_no_thread_is_passed_over(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 6, writes=1)
    Pruner(r).sweep(3)
    stamp = time.time() * 1000
    r.json().set("checkpoint:foreign", "$", {"checkpoint_ts": stamp})
    r.json().set("checkpoint:foreign2", "$", {"checkpoint_ts": stamp, "thread_id": ["not", "a", "tag"]})
    put_checkpoints(saver, "t", 2, writes=1)
    result = Pruner(r).sweep(3)
    assert result.kind == "incremental" and len(checkpoint_ids(saver, "t")) == 3
    assert r.exists("checkpoint:foreign", "checkpoint:foreign2") == 2


def set_stamps(r: redis.Redis, thread_id: str, stamps: list[float]) -> None:
    """Give the thread's root checkpoints, oldest first, these checkpoint_ts."""
    keys = sorted(r.scan_iter(match=f"checkpoint:{thread_id}:__empty__:*", count=1000))
    assert len(keys) == len(stamps)
    for key, stamp in zip(keys, stamps, strict=True):
        r.json().set(key, "$.checkpoint_ts", stamp)


def rule_mark(r: redis.Redis) -> int:
    """The one (non-full) watermark there is."""
    (mark,) = [int(v) for f, v in watermarks(r).items() if not f.startswith(b"full ")]
    return mark


def first_pass(r: redis.Redis, saver: RedisSaver, keep: int) -> int:
    """A seed thread and a first complete pass of `keep` with margin 0; its watermark."""
    put_checkpoints(saver, "seed", 1, writes=0)
    Pruner(r).sweep(keep, margin=0)
    return rule_mark(r)


def test_each_margin_has_its_watermark_so_a_smaller_one_never_hides_a_lagging_writer(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "seed", 1, writes=0)
    assert Pruner(r).sweep(3, margin=0).kind == "full"
    assert Pruner(r).sweep(3, margin=2).kind == "full"
    put_checkpoints(saver, "lag", 6, writes=1)
    shift_stamps(r, "lag", 1000)  # within the regular margin (2 s)
    time.sleep(1.5)
    assert Pruner(r).sweep(3, margin=0).kind == "incremental"  # reads from its own mark
    time.sleep(0.6)
    regular = Pruner(r).sweep(3, margin=2)
    assert regular.kind == "incremental" and len(checkpoint_ids(saver, "lag")) == 3


def test_segment_and_window_boundaries_lose_no_checkpoint(r: redis.Redis, saver: RedisSaver) -> None:
    mark = first_pass(r, saver, 2)
    threads = [f"b{i}" for i in range(120)]
    for i, thread_id in enumerate(threads):  # whole-ms stamps from the mark on: every boundary holds some
        put_checkpoints(saver, thread_id, 3, writes=0)
        set_stamps(r, thread_id, [mark + i // 2] * 3)
    put_checkpoints(saver, "before", 3, writes=0)
    set_stamps(r, "before", [mark - 1] * 3)  # just before the window: the next full pass's
    time.sleep(0.2)
    result = Pruner(r, budget=1000).sweep(2, margin=0)  # segments of 50 entries at most
    assert result.kind == "incremental" and result.threads_pruned == len(threads)
    assert all(len(checkpoint_ids(saver, t)) == 2 for t in threads)
    assert len(checkpoint_ids(saver, "before")) == 3


def test_a_thread_active_across_segments_is_visited_once_from_its_newest(
    r: redis.Redis, saver: RedisSaver
) -> None:
    mark = first_pass(r, saver, 3)
    threads = [f"busy{i}" for i in range(20)]
    for i, thread_id in enumerate(threads):  # 10 checkpoints each, interleaved over the window
        put_checkpoints(saver, thread_id, 10, writes=1)
        set_stamps(r, thread_id, [mark + 1 + step * 40 + i for step in range(10)])
    time.sleep(0.5)
    result = Pruner(r, budget=1000).sweep(3, margin=0)  # 200 entries, segments of 50 at most
    assert result.kind == "incremental" and result.calls >= 1
    assert (result.threads_visited, result.threads_pruned) == (len(threads), len(threads))
    assert all(len(checkpoint_ids(saver, t)) == 3 for t in threads)


def spread(r: redis.Redis, threads: list[str], base: float) -> None:
    """Interleave the threads' root checkpoints over segments: thread i's k-th at base + 40 k + i."""
    for i, thread_id in enumerate(threads):
        set_stamps(r, thread_id, [base + step * 40 + i for step in range(10)])


def test_a_thread_a_sweep_cannot_prune_is_named_once_a_pass_however_many_segments_hold_it(
    r: redis.Redis, saver: RedisSaver
) -> None:
    threads = [f"busy{i}" for i in range(20)] + [" "]  # " ": nothing RediSearch indexes
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 10, writes=1)
    spread(r, threads, time.time() * 1000 - 3_600_000)
    result = Pruner(r, budget=100).sweep(3, full=True, margin=0)
    assert result.calls > 1 and [f.thread_id for f in result.failed] == [" "]
    assert (result.threads_failed, result.threads_pruned, result.threads_visited) == (1, 20, 21)


def test_a_thread_whose_pointer_key_another_threads_namespace_spells_is_still_visited(
    r: redis.Redis, saver: RedisSaver
) -> None:
    # thread a's namespace b:__empty__ has the latest pointer key of thread a:b's root, and a
    # checkpoint stamped after all of a:b's: a:b's newest is proven by its document, or a:b
    # would be left to a segment that holds none of it, and never visited
    threads = [f"busy{i}" for i in range(20)] + ["a:b"]
    own = {thread_id: put_checkpoints(saver, thread_id, 10, writes=1) for thread_id in threads}
    base = time.time() * 1000 - 3_600_000
    spread(r, threads, base)
    (other,) = put_checkpoints(saver, "a", 1, writes=0, ns="b:__empty__")  # put last: its pointer
    r.json().set(f"checkpoint:a:b:__empty__:{other}", "$.checkpoint_ts", base + 2000)
    assert r.get("checkpoint_latest:a:b:__empty__") == f"checkpoint:a:b:__empty__:{other}".encode()
    Pruner(r, budget=100).sweep(3, full=True, margin=0)
    assert all(len(checkpoint_ids(saver, t)) == 3 for t in threads[:-1])
    # (a's checkpoint has a key of a:b's root form: key by key, it is listed with them)
    assert set(checkpoint_ids(saver, "a:b")) == {*sorted(own["a:b"])[-3:], other}


def test_a_watermark_from_the_future_is_no_watermark_and_a_future_cursor_is_refused(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 6, writes=1)
    Pruner(r).sweep(3)
    future = 4_102_444_800_000  # 2100-01-01
    r.hset(WATERMARKS, mapping=dict.fromkeys(watermarks(r), future))
    put_checkpoints(saver, "t", 4, writes=1)
    assert Pruner(r).sweep(3).kind == "full" and len(checkpoint_ids(saver, "t")) == 3
    assert all(int(v) < future for v in watermarks(r).values())
    for i in range(30):
        put_checkpoints(saver, f"more{i}", 4, writes=1)
    reply = r.fcall("lgprune_sweep", 0, "0", "3", "BUDGET", "10", "FULL_EVERY", "1000")
    fp = dict(zip(reply[::2], reply[1::2], strict=True))[b"cursor"].split(b":")[1].decode()
    for forged in (f"i:{fp}:{future}:{future}:{future}:1:0::", f"j:{fp}:{future}:0:0:1:0::"):
        with pytest.raises(redis.ResponseError, match="LGPRUNE BADARG CURSOR does not continue"):
            r.fcall("lgprune_sweep", 0, forged, "3", "BUDGET", "10", "FULL_EVERY", "1000")


def test_a_cursor_that_would_never_move_or_would_end_the_pass_unread_is_refused(
    r: redis.Redis, saver: RedisSaver
) -> None:
    for i in range(20):
        put_checkpoints(saver, f"t{i}", 4, writes=1)
    Pruner(r).sweep(3, margin=0)  # a watermark: the next pass is incremental
    for i in range(20):
        put_checkpoints(saver, f"t{i}", 2, writes=1)
    reply = r.fcall("lgprune_sweep", 0, "0", "3", "BUDGET", "10", "MARGIN", "0")
    cursor = dict(zip(reply[::2], reply[1::2], strict=True))[b"cursor"].decode()
    kind, fp, start, since, lo, _width, u, _phase, _after = cursor.split(":", 8)
    assert kind == "i"
    keys, marks = every_key(r), watermarks(r)
    for forged in (
        f"i:{fp}:{start}:{since}:{lo}:0:{u}::",  # width 0: the segment never moves
        f"i:{fp}:{start}:{since}:{'9' * 30}:1:{u}::",  # past every window: the pass would end unread
        f"i:{fp}:{start}:{since}:-{'9' * 30}:1:{u}::",  # before every window
        f"i:{fp}:{start}:{since}:{start}:1:{u}::",  # at the end of the last window: nothing left to read
    ):
        with pytest.raises(redis.ResponseError, match="LGPRUNE BADARG CURSOR"):
            r.fcall("lgprune_sweep", 0, forged, "3", "BUDGET", "10", "MARGIN", "0")
    assert every_key(r) == keys and watermarks(r) == marks
    reply = r.fcall("lgprune_sweep", 0, "0", "3", "BUDGET", "10", "ORPHANS")
    fp = dict(zip(reply[::2], reply[1::2], strict=True))[b"cursor"].split(b":")[1].decode()
    with pytest.raises(redis.ResponseError, match="LGPRUNE BADARG CURSOR"):  # not a SCAN cursor Redis takes
        r.fcall("lgprune_sweep", 0, f"o:{fp}:{start}:0:{'9' * 25}", "3", "BUDGET", "10", "ORPHANS")


def test_a_dense_millisecond_larger_than_a_call_is_swept_several_threads_a_call(
    r: redis.Redis, saver: RedisSaver
) -> None:
    stamp = time.time() * 1000 - 3_600_000
    for i in range(150):  # 450 entries in one millisecond: each call groups them all again
        put_checkpoints(saver, f"d{i:03d}", 3, writes=0)
        set_stamps(r, f"d{i:03d}", [stamp] * 3)
    # a dry run, which cannot write the millisecond's threads down, groups it again each call
    dry = Pruner(r, budget=1_000).sweep(1, full=True, dry_run=True)  # grouping 450 entries: 900 units
    assert dry.threads_pruned == 150 and not dry.unfinished
    assert dry.calls <= 20  # (17; charged whole, each call would visit half as many: 30)
    result = Pruner(r, budget=1_000).sweep(1, full=True)  # collected once, then visited
    assert result.threads_pruned == 150 and not result.unfinished
    assert result.calls <= dry.calls * 2 // 3  # (10 against 18: no call groups it again; else 17)


DENSE = [f"d{i}" for i in range(18)] + ["D1x", "d1x"]  # and two ids that differ only by case


def dense_millisecond(r: redis.Redis, saver: RedisSaver, threads: list[str] = DENSE) -> int:
    """After a first pass (keep 1, margin 0): `threads` of 4 checkpoints in one millisecond
    of the next pass's window (80 entries by default, more than one aggregate may read under
    a search cap of 60), a neighbour on each side of it, and a thread just before the window.
    Returns the watermark."""
    mark = first_pass(r, saver, 1)
    for thread_id in threads:
        put_checkpoints(saver, thread_id, 4, writes=1)
        set_stamps(r, thread_id, [mark + 5.5] * 4)  # (a fraction of the millisecond: still inside it)
    for thread_id, stamp in (("left", mark + 4), ("right", mark + 6), ("before", mark - 1)):
        put_checkpoints(saver, thread_id, 4, writes=1)
        set_stamps(r, thread_id, [stamp] * 4)
    time.sleep(0.1)
    return mark


def dense_keys(r: redis.Redis) -> list[bytes]:
    """The dense segments' keys left; a pass's notes of where its threads are (which only
    spare reads) may stay, but never without an expiry."""
    keys = list(r.scan_iter(match="lgprune:dense*", count=1000))
    notes = [k for k in keys if k.endswith(b":placed")]
    assert all(0 < r.ttl(k) <= 600 for k in notes), [(k, r.ttl(k)) for k in notes]
    return [k for k in keys if k not in notes]


def saver_keys(r: redis.Redis) -> dict[bytes, bytes | None]:
    """The DUMP of every key but lgprune's own."""
    return {k: v for k, v in snapshot(r).items() if not k.startswith(b"lgprune:")}


@pytest.mark.parametrize("full", [False, True])
def test_a_millisecond_holding_more_than_one_aggregate_may_read_is_pruned_over_several_calls(
    r: redis.Redis, saver: RedisSaver, full: bool
) -> None:
    mark = dense_millisecond(r, saver)
    with result_cap(r, 60):  # counts and groups ask at most 59 entries: the millisecond is read in pages
        result = Pruner(r, budget=100).sweep(1, margin=0, full=full)
    assert result.kind == ("full" if full else "incremental") and not result.unfinished
    assert result.calls > 2 and result.threads_pruned == len(DENSE) + 2 + full  # (a full pass: "before" too)
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in [*DENSE, "left", "right"])
    assert len(checkpoint_ids(saver, "before")) == (1 if full else 4)  # outside the window: the full pass's
    assert rule_mark(r) > mark and dense_keys(r) == []


def test_a_thread_met_in_several_dense_milliseconds_is_placed_by_its_note(
    r: redis.Redis, saver: RedisSaver
) -> None:
    mark = first_pass(r, saver, 1)
    threads = [f"n{i:02d}" for i in range(30)]
    for thread_id in threads:  # 60 entries in each of two milliseconds: both read in pages
        put_checkpoints(saver, thread_id, 4, writes=1)
        set_stamps(r, thread_id, [mark + 5.5, mark + 5.5, mark + 7.6, mark + 7.6])
    time.sleep(0.1)
    r.config_resetstat()
    with result_cap(r, 60):
        result = Pruner(r, budget=100).sweep(1, margin=0)
    # met first at mark + 5, where each newest root's stamp is read and noted; met again at
    # mark + 7 by later calls, which read the note (not the document again): 7.6 as it is,
    # not rounded into mark + 8
    assert not result.unfinished and result.calls > 3 and result.threads_visited == len(threads)
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in threads)
    assert r.info("commandstats")["cmdstat_json.get"]["calls"] == len(threads)
    (notes,) = r.scan_iter(match="lgprune:dense:*:placed")
    assert r.hlen(notes) == len(threads) and 0 < r.ttl(notes) <= 600 and dense_keys(r) == []


def test_notes_of_another_type_are_no_notes_and_the_pass_completes(r: redis.Redis, saver: RedisSaver) -> None:
    dense_millisecond(r, saver)
    with result_cap(r, 60):
        cursor, calls, visited = "0", 0, 0
        while cursor != "0" or calls == 0:  # keep 4: no call deletes anything, so none could hide an error
            reply = r.fcall("lgprune_sweep", 0, cursor, "4", "BUDGET", "100", "MARGIN", "0")
            out = dict(zip(reply[::2], reply[1::2], strict=False))
            cursor, calls, visited = out[b"cursor"].decode(), calls + 1, visited + out[b"threads_visited"]
            for notes in r.scan_iter(match="lgprune:dense:*:placed"):
                if r.type(notes) == b"hash":
                    r.set(notes, "not lgprune's")  # the places are read again, none written there
    # a full pass (keep 4 has no watermark): seed, left, right and before too
    assert calls > 2 and out[b"unfinished"] == 0 and visited == len(DENSE) + 4
    assert [r.get(k) for k in r.scan_iter(match="lgprune:dense:*:placed")] == [b"not lgprune's"]


def test_a_dense_millisecond_past_the_search_cap_is_finished_by_the_next_pass(
    r: redis.Redis, saver: RedisSaver
) -> None:
    threads = [f"x{i:02d}" for i in range(30)]
    mark = dense_millisecond(r, saver, threads)  # 120 entries: pages from offsets up to the cap (60) read 100
    with result_cap(r, 60):
        first = Pruner(r, budget=100).sweep(1, margin=0)
        assert first.unfinished and rule_mark(r) == mark and dense_keys(r) == []
        assert 0 < sum(len(checkpoint_ids(saver, t)) == 1 for t in threads) < len(threads)
        second = Pruner(r, budget=100).sweep(1, margin=0)  # the first one's prunes shrank the millisecond
    assert not second.unfinished and rule_mark(r) > mark
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in threads)


def test_a_dry_run_passes_over_a_dense_millisecond_and_writes_nothing(
    r: redis.Redis, saver: RedisSaver
) -> None:
    dense_millisecond(r, saver)
    before, marks = snapshot(r), watermarks(r)
    with result_cap(r, 60):
        result = Pruner(r, budget=100).sweep(1, margin=0, dry_run=True)
    assert result.unfinished and result.threads_pruned == 2  # the neighbours: what would go
    assert snapshot(r) == before and watermarks(r) == marks and dense_keys(r) == []


def sweep_call(r: redis.Redis, cursor: str, *args: str) -> dict[bytes, bytes]:
    reply = r.fcall("lgprune_sweep", 0, cursor, *args)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def into_collecting(r: redis.Redis, args: tuple[str, ...]) -> str:
    """Sweep from "0" on to the first call that stopped collecting a dense millisecond's
    threads past its first page; its cursor."""
    cursor = "0"
    while ":c" not in cursor:
        cursor = sweep_call(r, cursor, *args)[b"cursor"].decode()
    return cursor


def sweep_on(r: redis.Redis, cursor: str, args: tuple[str, ...]) -> dict[bytes, bytes]:
    """Continue a sweep to its end; the last call's reply."""
    while True:
        reply = sweep_call(r, cursor, *args)
        cursor = reply[b"cursor"].decode()
        if cursor == "0":
            return reply


def test_a_crafted_cursor_inside_a_dense_millisecond_is_refused_and_deletes_nothing(
    r: redis.Redis, saver: RedisSaver
) -> None:
    dense_millisecond(r, saver)
    args = ("1", "BUDGET", "10", "MARGIN", "0")
    with result_cap(r, 60):
        cursor = into_collecting(r, args)
        head, phase, _after = cursor.rsplit(":", 2)
        offset, anchor = phase[1:].split(".")
        assert phase.startswith("c") and int(offset) > 0 and re.fullmatch("[0-9a-f]{16}", anchor)
        before, marks = saver_keys(r), watermarks(r)
        forged = [
            f"{head}:c{'9' * 20}.{anchor}:",  # an offset past any the server allows
            f"{head}:c{offset}:",  # an offset without its anchor
            f"{head}:c{offset}.{anchor[:8]}:",  # an anchor cut short
            f"{head}:c0.{anchor}:",  # an anchor before the first entry
            f"{head}:x50:",  # no phase a pass has
            f"{head}:{phase}:>d3",  # collecting, yet past a thread
        ]
        for cursor in forged:
            with pytest.raises(redis.ResponseError, match="LGPRUNE BADARG CURSOR"):
                r.fcall("lgprune_sweep", 0, cursor, *args)
    assert saver_keys(r) == before and watermarks(r) == marks


@pytest.mark.parametrize("phase", ["collecting", "visiting"])
def test_a_dense_millisecond_whose_key_is_gone_waits_for_the_next_pass(
    r: redis.Redis, saver: RedisSaver, phase: str
) -> None:
    mark = dense_millisecond(r, saver)
    args = ("1", "BUDGET", "100", "MARGIN", "0")
    with result_cap(r, 60):
        cursor = into_collecting(r, args)
        while phase == "visiting" and ":v:" not in cursor:
            cursor = sweep_call(r, cursor, *args)[b"cursor"].decode()
        (key,) = dense_keys(r)
        r.delete(key)  # evicted (the one key with a TTL, under a volatile-* policy), or expired
        last = sweep_on(r, cursor, args)  # no error, no loop
    assert last[b"unfinished"] == 1 and rule_mark(r) == mark and dense_keys(r) == []
    assert len(checkpoint_ids(saver, "right")) == 1  # the pass went on past the millisecond
    with result_cap(r, 60):
        assert not Pruner(r, budget=100).sweep(1, margin=0).unfinished and rule_mark(r) > mark
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in DENSE)


@pytest.mark.parametrize("writer", ["put_writes", "delete_thread"])
def test_entries_moved_under_a_dense_page_boundary_leave_no_thread_in_a_completed_pass(
    r: redis.Redis, saver: RedisSaver, writer: str
) -> None:
    mark = dense_millisecond(r, saver)  # each thread's 4 entries together, in DENSE's order
    args = ("1", "BUDGET", "100", "MARGIN", "0")
    with result_cap(r, 60):
        cursor = into_collecting(r, args)  # collected the first 50 entries: d0 to d11, half of d12
        assert ":c50." in cursor
    for thread_id in DENSE[:10]:  # 10 entries before the boundary move: d13 and d14 cross it
        if writer == "put_writes":  # re-indexes the checkpoint: it goes last in the index order
            checkpoint_id = checkpoint_ids(saver, thread_id)[-1]
            saver.put_writes(config_of(thread_id, checkpoint_id), [("x", 1)], task_id="w")
        elif thread_id in DENSE[:3]:  # 12 entries go
            saver.delete_thread(thread_id)
    with result_cap(r, 60):
        last = sweep_on(r, cursor, args)
    left = [t for t in DENSE[3:] if len(checkpoint_ids(saver, t)) > 1]
    assert last[b"unfinished"] == 1 and rule_mark(r) == mark  # never a completed pass that left a thread
    assert left == []  # (collecting started again from the first entry: this pass read them all)
    with result_cap(r, 60):
        Pruner(r, budget=100).sweep(1, margin=0)
    assert [t for t in DENSE[3:] if len(checkpoint_ids(saver, t)) > 1] == [] and rule_mark(r) > mark


def test_a_dense_page_is_charged_for_the_entries_before_its_offset(r: redis.Redis, saver: RedisSaver) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(8_000):  # more than one aggregate may read (4,000), all in one millisecond
        doc = {"thread_id": "bulk", "checkpoint_ns": "__empty__", "checkpoint_id": f"{i:06d}"}
        pipe.json().set(f"checkpoint:bulk:__empty__:{i:06d}", "$", {**doc, "checkpoint_ts": 1_000_000.5})
    pipe.execute()
    result = Pruner(r, budget=400).sweep(10_000)  # pages of 150 entries, grouped for 300 units
    # uncharged, a call reads two pages (~28 calls); a page at offset N reads N + 150 entries and
    # is charged N / 20 more: past offset 1,830 a call reads one (~49 calls)
    assert result.threads_visited == 1 and not result.unfinished
    assert result.calls > 40


def test_a_pass_whose_first_counts_spend_a_call_goes_on_from_where_they_narrowed(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 3, writes=1)
    pruner = Pruner(r, budget=100)
    assert pruner.sweep(10_000, margin=60).kind == "full"
    since = int(next(iter(watermarks(r).values()))) - 60_000
    pipe = r.pipeline(transaction=False)
    for i in range(5_000):  # a burst at the start of the next pass's window: counting it spends a small call
        doc = {"thread_id": "bulk", "checkpoint_ns": "__empty__", "checkpoint_id": f"{i:06d}"}
        pipe.json().set(
            f"checkpoint:bulk:__empty__:{i:06d}", "$", {**doc, "checkpoint_ts": since + 1 + i / 100}
        )
    pipe.execute()
    Pruner(r).install()
    first = r.fcall("lgprune_sweep", 0, "0", "10000", "BUDGET", "10", "MARGIN", "60000")
    cursor = first[1].decode()
    assert cursor.startswith("i:") and "inf" not in cursor
    result = pruner.sweep(10_000, margin=60)  # (a new pass: the first call's was abandoned)
    assert result.kind == "incremental" and not result.unfinished and result.calls > 2
