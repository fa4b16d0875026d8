"""LangGraph.js stores: lgprune (LAYOUT js) against what a user of the JS saver has without it.

The store: `threads` chat threads of `turns` turns each, written by the real JS saver
(@langchain/langgraph-checkpoint-redis, through tests/js/saver.mjs), copied once (DUMP)
and restored before every run. Each contender keeps the newest `keep` root checkpoints of
every thread:

  lgprune sweep          `Pruner(layout="js").sweep(keep)`: one full pass (threads found
                         through the index), checkpoints, writes and unreferenced blobs
  lgprune prune_many     the same threads named: `prune_many(ids, keep)`
  JS saver rewrite       what the JS saver's API allows: per thread, list() the newest
                         `keep`, deleteThread (its KEYS patterns scan the whole keyspace),
                         and put them back with their pending writes (saver.mjs "rewrite")

The JS saver's TTL (`defaultTTL`) is no contender: it deletes a thread's checkpoints by age,
the newest too once the thread is idle. Server cost: the Redis main thread's CPU time
(INFO cpu, used_cpu_{sys,user}_main_thread) over the run, which counts every command
wherever it comes from; runs interleaved in rotating order, medians.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from lgprune import Pruner

SAVER = Path(__file__).resolve().parent.parent / "tests" / "js"


@dataclass(frozen=True)
class JsRun:
    name: str
    threads: int
    server_ms: float  # median Redis main-thread CPU
    wall_ms: float  # median wall time
    longest_ms: float  # the longest single command (SLOWLOG; for lgprune, an FCALL), median
    checkpoints_after: int
    blobs_after: int
    keys_after: int
    memory_after: int  # bytes (used_memory)


def js(op: str, url: str, **request: Any) -> Any:
    done = subprocess.run(
        ["node", "saver.mjs"],
        cwd=SAVER,
        input=json.dumps({"op": op, "url": url, **request}),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"saver.mjs {op}: {done.stderr.strip()[-1000:]}")
    return json.loads(done.stdout)


def longest_ms(client: redis.Redis) -> float:
    """The longest command SLOWLOG holds (every command is logged during a run)."""
    return max((entry["duration"] / 1000 for entry in client.slowlog_get(1_000_000)), default=0.0)


def main_thread_ms(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return (float(cpu["used_cpu_sys_main_thread"]) + float(cpu["used_cpu_user_main_thread"])) * 1000


Dump = list[tuple[bytes, bytes]]


def restore(client: redis.Redis, url: str, dump: Dump) -> None:
    """The store as written: the JS saver's indexes, then every key."""
    client.flushall()
    js("write", url, threads=[])  # RedisSaver.fromUrl makes the indexes
    pipe = client.pipeline(transaction=False)
    for i, (key, value) in enumerate(dump):
        pipe.restore(key, 0, value)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def count(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def measure(client: redis.Redis, url: str, *, threads: int, turns: int, keep: int, runs: int) -> list[JsRun]:
    ids = [f"js-user-{i:05d}" for i in range(threads)]
    client.flushall()
    js("write", url, threads=[{"id": t, "turns": turns, "graph": "chat"} for t in ids])
    dump = [(key, value) for key in client.scan_iter(count=1000) if (value := client.dump(key)) is not None]
    contenders: dict[str, Callable[[], object]] = {
        "lgprune sweep": lambda: Pruner(client, layout="js").sweep(keep, full=True),
        "lgprune prune_many": lambda: Pruner(client, layout="js").prune_many(ids, keep),
        "JS saver rewrite": lambda: js("rewrite", url, threads=ids, keep=keep),
    }
    names = list(contenders)
    server: dict[str, list[float]] = {n: [] for n in names}
    longest: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    after: dict[str, tuple[int, int, int, int]] = {}
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:  # rotating order
            restore(client, url, dump)
            Pruner(client).install()
            client.config_set("slowlog-max-len", 1_000_000)
            client.config_set("slowlog-log-slower-than", 0)
            client.slowlog_reset()
            cpu, started = main_thread_ms(client), time.perf_counter()
            contenders[name]()
            wall[name].append((time.perf_counter() - started) * 1000)
            server[name].append(main_thread_ms(client) - cpu)
            longest[name].append(longest_ms(client))
            client.config_set("slowlog-log-slower-than", 10000)
            client.slowlog_reset()
            checkpoints = indexed_checkpoints(client)
            after[name] = (
                checkpoints,
                count(client, "checkpoint_blob:*"),
                int(client.dbsize()),
                int(client.info("memory")["used_memory"]),
            )
            if checkpoints != threads * keep:
                raise AssertionError(f"{name} left {checkpoints} checkpoints, not {threads * keep}")
    medians = [
        JsRun(
            n,
            threads,
            statistics.median(server[n]),
            statistics.median(wall[n]),
            statistics.median(longest[n]),
            *after[n],
        )
        for n in names
    ]
    return [*medians, JsRun("(store before)", threads, 0.0, 0.0, 0.0, *store_counts(client, url, dump))]


def indexed_checkpoints(client: redis.Redis) -> int:
    found = client.execute_command("FT.SEARCH", "checkpoints", "*", "LIMIT", "0", "0")  # type: ignore[no-untyped-call]
    if isinstance(found, dict):  # RESP3
        total = found.get(b"total_results", found.get("total_results", 0))
        return int(total or 0)
    return int(found[0])


def store_counts(client: redis.Redis, url: str, dump: Dump) -> tuple[int, int, int, int]:
    restore(client, url, dump)
    return (
        indexed_checkpoints(client),
        count(client, "checkpoint_blob:*"),
        int(client.dbsize()),
        int(client.info("memory")["used_memory"]),
    )
