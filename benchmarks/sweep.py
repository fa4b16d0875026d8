"""A sweep over many threads: lgprune's server-side sweep against looping RedisSaver.prune."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from langgraph.checkpoint.redis import RedisSaver

from benchmarks.data import build_thread, fresh
from lgprune import Pruner

ODD_THREADS = ["Wang1", "wang1", "wang1:2025", "a b|c"]


@dataclass(frozen=True)
class SweepRun:
    name: str
    seconds: float
    largest_call_ms: float  # the longest lgprune FCALL in SLOWLOG (0 for client-side contenders)
    ping_p99_ms: float  # a concurrent PING probe's 99th percentile while the contender ran
    freed_mb: float  # used_memory before minus after
    correct: bool
    problem: str


def _ping_loop(url: str, stop: Any, latencies: Any) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.perf_counter()
        client.ping()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.001)


class PingProbe:
    """PINGs Redis from another process (at most every millisecond, for at most
    10 minutes) while a contender runs; the latencies tell whether Redis stalled."""

    def __init__(self, url: str) -> None:
        self.manager = multiprocessing.Manager()
        self.stop = self.manager.Event()
        self.shared = self.manager.list()
        self.process = multiprocessing.Process(target=_ping_loop, args=(url, self.stop, self.shared))
        self.latencies: list[float] = []

    def __enter__(self) -> PingProbe:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join()
        self.latencies = list(self.shared)
        self.manager.shutdown()

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0


def build(client: redis.Redis, threads: int, per_thread: int) -> list[str]:
    """`threads` threads of `per_thread` checkpoints (2 writes each) and the odd ids, by the saver."""
    saver = fresh(client)
    ids = [f"user:{i}:chat" for i in range(threads)] + ODD_THREADS

    def one(thread_id: str) -> None:
        build_thread(saver, thread_id, per_thread, messages=1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, ids))
    return ids


def root_checkpoints(client: redis.Redis, thread_id: str) -> int:
    prefix = f"checkpoint:{thread_id}:__empty__:".encode()
    glob = "".join("\\" + c if c in "*?[]\\" else c for c in prefix.decode()) + "*"
    return sum(1 for k in client.scan_iter(match=glob, count=1000) if b":" not in k[len(prefix) :])


def check(client: redis.Redis, ids: list[str], keep: int) -> str:
    """'' when every thread holds exactly `keep` checkpoints and no write lost its checkpoint."""
    wrong = [t for t in ids if root_checkpoints(client, t) != keep]
    if wrong:
        return f"{len(wrong)} threads not at {keep} checkpoints, e.g. {wrong[:3]}"
    expected_writes = 2 * keep * len(ids)
    writes = sum(1 for _ in client.scan_iter(match="checkpoint_write:*", count=1000))
    return "" if writes == expected_writes else f"{writes} writes left, expected {expected_writes}"


def measure(client: redis.Redis, *, threads: int, per_thread: int = 15, keep: int = 5) -> list[SweepRun]:
    def lgprune_sweep(ids: list[str]) -> None:
        Pruner(client).sweep(keep)

    def saver_loop(ids: list[str]) -> None:
        saver = RedisSaver(redis_client=client)
        saver.setup()
        for thread_id in ids:
            saver.prune([thread_id], keep_last=keep)

    runs = []
    contenders: list[tuple[str, Callable[[list[str]], None]]] = [
        ("lgprune Pruner.sweep", lgprune_sweep),
        ("loop of RedisSaver.prune([t], keep_last) over the given ids", saver_loop),
    ]
    for name, fn in contenders:
        ids = build(client, threads, per_thread)
        Pruner(client).install()
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 1_000_000)
        client.slowlog_reset()
        memory_before = int(client.info("memory")["used_memory"])
        url = "redis://{host}:{port}".format(**client.connection_pool.connection_kwargs)
        with PingProbe(url) as probe:
            started = time.perf_counter()
            fn(ids)
            seconds = time.perf_counter() - started
        time.sleep(0.5)  # UNLINK frees large values in the background
        freed = (memory_before - int(client.info("memory")["used_memory"])) / 2**20
        calls = [e["duration"] for e in client.slowlog_get(1_000_000) if e["command"].startswith(b"FCALL")]
        client.config_set("slowlog-log-slower-than", 10_000)
        problem = check(client, ids, keep)
        runs.append(
            SweepRun(name, seconds, max(calls, default=0) / 1000, probe.p99, freed, not problem, problem)
        )
    return runs
