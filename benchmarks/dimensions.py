"""Prune time across thread sizes, writes per checkpoint and unrelated data in the database."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import redis

from benchmarks.core import FLOOR_LIBRARY, _run
from lgprune import Pruner


@dataclass(frozen=True)
class Point:
    dimension: str  # "checkpoints", "writes" or "unrelated keys"
    value: int
    contender: str
    median_ms: float
    min_ms: float
    max_ms: float


def _unrelated(client: redis.Redis, count: int) -> None:
    """`count` plain keys that are not LangGraph data, written in pipelines."""
    for start in range(0, count, 10_000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 10_000, count)):
                pipe.set(f"unrelated:{i}", "x" * 64)
            pipe.execute()


def measure(client: redis.Redis, *, quick: bool, runs: int) -> list[Point]:
    pruner = Pruner(client)
    keep = 10

    def lgprune(saver: object, thread: object) -> None:
        pruner.prune("bench", keep)

    def floor(saver: object, thread: object) -> None:
        keys = thread.doomed_keys(keep)  # type: ignore[attr-defined]
        client.fcall("bench_unlink", len(keys), *keys)

    def point(
        dimension: str,
        value: int,
        name: str,
        fn: object,
        checkpoints: int,
        writes: int,
        unrelated: int,
        n: int,
    ) -> Point:
        times = []
        for _ in range(n):
            pruner.install()
            client.function_load(FLOOR_LIBRARY, replace=True)
            times.append(
                _run(
                    client,
                    checkpoints,
                    keep,
                    fn,
                    writes=writes,  # type: ignore[arg-type]
                    before_build=lambda: _unrelated(client, unrelated),
                )
            )
        return Point(dimension, value, name, statistics.median(times), min(times), max(times))

    if quick:
        runs = min(runs, 3)  # keeps `--quick` well under 3 minutes
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10_000]
    unrelated = [0, 100_000] if quick else [0, 10_000, 100_000, 1_000_000]
    points = []
    for name, fn in (("lgprune", lgprune), ("floor", floor)):
        for checkpoints in sizes:
            n = runs if checkpoints < 10_000 else 3
            points.append(point("checkpoints", checkpoints, name, fn, checkpoints, 2, 0, n))
        for writes in (0, 2, 10):
            points.append(point("writes", writes, name, fn, 1000, writes, 0, runs))
        for count in unrelated:
            points.append(point("unrelated keys", count, name, fn, 1000, 2, count, runs))
    return points
