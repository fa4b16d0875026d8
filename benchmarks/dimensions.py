"""Prune time across thread sizes, writes per checkpoint and unrelated data in the database."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import redis
from langgraph.checkpoint.redis import RedisSaver

from benchmarks.core import FLOOR_LIBRARY, _run
from benchmarks.data import Thread
from lgprune import Pruner


@dataclass(frozen=True)
class Point:
    dimension: str  # "checkpoints", "writes" or "unrelated keys"
    value: int
    contender: str  # "lgprune", "floor" or "RedisSaver.prune"
    median_ms: float
    min_ms: float
    max_ms: float
    freed_mb: float  # median
    problem: str  # the first wrong outcome, '' when every run deleted exactly the doomed keys


def _unrelated(client: redis.Redis, count: int) -> None:
    """`count` plain keys that are not LangGraph data, written in pipelines."""
    for start in range(0, count, 10_000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 10_000, count)):
                pipe.set(f"unrelated:{i}", "x" * 64)
            pipe.execute()


def measure(client: redis.Redis, *, quick: bool, runs: int) -> list[Point]:
    """lgprune, the floor and (except for unrelated data) RedisSaver.prune at each value."""
    pruner = Pruner(client)
    keep = 10

    def lgprune(saver: RedisSaver, thread: Thread) -> None:
        pruner.prune("bench", keep)

    def floor(saver: RedisSaver, thread: Thread) -> None:
        keys = thread.doomed_keys(keep)
        client.fcall("bench_unlink", len(keys), *keys)

    def saver_prune(saver: RedisSaver, thread: Thread) -> None:
        saver.prune([thread.thread_id], keep_last=keep)

    def point(
        dimension: str,
        value: int,
        name: str,
        fn: Callable[[RedisSaver, Thread], None],
        checkpoints: int,
        writes: int,
        unrelated: int,
        n: int,
    ) -> Point:
        outcomes = []
        for _ in range(n):
            pruner.install()
            client.function_load(FLOOR_LIBRARY, replace=True)
            outcomes.append(
                _run(
                    client,
                    checkpoints,
                    keep,
                    fn,
                    writes=writes,
                    before_build=lambda: _unrelated(client, unrelated),
                )
            )
        times = [o.ms for o in outcomes]
        return Point(
            dimension,
            value,
            name,
            statistics.median(times),
            min(times),
            max(times),
            statistics.median(o.freed_mb for o in outcomes),
            next((o.problem for o in outcomes if o.problem), ""),
        )

    if quick:
        runs = min(runs, 3)  # keeps `--quick` well under 3 minutes
    saver_runs = max(3, runs // 2)
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10_000]
    unrelated = [0, 100_000] if quick else [0, 10_000, 100_000, 1_000_000]
    points = []
    for name, fn in (("lgprune", lgprune), ("floor", floor), ("RedisSaver.prune", saver_prune)):
        n = saver_runs if fn is saver_prune else runs
        for checkpoints in sizes:
            points.append(
                point(
                    "checkpoints",
                    checkpoints,
                    name,
                    fn,
                    checkpoints,
                    2,
                    0,
                    min(n, 5) if checkpoints >= 10_000 else n,
                )
            )
        for writes in (0, 2, 10):
            points.append(point("writes", writes, name, fn, 1000, writes, 0, n))
        if fn is not saver_prune:  # not the saver: five builds with 1,000,000 keys each take minutes
            for count in unrelated:
                points.append(point("unrelated keys", count, name, fn, 1000, 2, count, n))
    return points
